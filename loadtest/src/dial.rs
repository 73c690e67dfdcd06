//! Opening a socket for one connection: `socket(2)`, `SO_REUSEADDR`, bound to its source
//! address with `IP_BIND_ADDRESS_NO_PORT` (the port is picked at connect time, per
//! destination, so one source address serves several destinations), then handed to a ring's
//! fixed-file table by the caller, which closes the descriptor. Also the names errors are
//! counted under.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A non-blocking TCP socket for `dst`, bound to `src` if given, with `SO_RCVBUF` set to
/// `rcvbuf` unless 0 (before connect, so the window is sized from it).
pub fn socket(dst: &SocketAddr, src: Option<Ipv4Addr>, rcvbuf: u32) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(*dst),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.set_tcp_nodelay(true)?;
    if rcvbuf > 0 {
        s.set_recv_buffer_size(rcvbuf as usize)?;
    }
    if let Some(src) = src {
        set_bind_no_port(&s)?;
        s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
    }
    Ok(s)
}

fn set_bind_no_port(s: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The name a connect failure is counted under: `refused`, `reset`, `timeout`, or the errno's
/// symbolic name.
pub fn connect_error_kind(errno: i32) -> String {
    match errno {
        libc::ECONNREFUSED => "refused".into(),
        libc::ECONNRESET => "reset".into(),
        // ECANCELED: the linked timeout cancelled the connect.
        libc::ETIMEDOUT | libc::ECANCELED => "timeout".into(),
        e => errno_name(e),
    }
}

/// A symbolic name for common errnos, else `errno N`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EPIPE => "EPIPE",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECANCELED => "ECANCELED",
        libc::EBADF => "EBADF",
        libc::ENXIO => "ENXIO",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        libc::ENOTCONN => "ENOTCONN",
        libc::EISCONN => "EISCONN",
        libc::EALREADY => "EALREADY",
        _ => return format!("errno {errno}"),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        assert_eq!(connect_error_kind(libc::ECONNREFUSED), "refused");
        assert_eq!(connect_error_kind(libc::ECANCELED), "timeout");
        assert_eq!(connect_error_kind(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
        assert_eq!(connect_error_kind(4242), "errno 4242");
    }

    #[test]
    fn bound_socket_takes_its_source() {
        let s = socket(
            &"127.0.0.1:9".parse().unwrap(),
            Some(Ipv4Addr::new(127, 0, 1, 7)),
            4096,
        )
        .unwrap();
        let local = s.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(local.ip(), std::net::IpAddr::from([127, 0, 1, 7]));
        // The kernel doubles SO_RCVBUF for its bookkeeping.
        assert_eq!(s.recv_buffer_size().unwrap(), 8192);
    }
}
