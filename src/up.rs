//! `corecast up`: a dispatcher and a gateway in one process, joined by the same internal link
//! that crosses the network between processes (the gateway dials the dispatcher's link port on
//! loopback), so the single-process default and the cluster share one code path.

use anyhow::Context;

pub fn run(
    mut gateway: gateway::Config,
    dispatcher: dispatcher::Config,
    print_config: bool,
) -> anyhow::Result<()> {
    if print_config {
        println!("# gateway (--gateway-config)\n{}", gateway.to_toml());
        println!(
            "# dispatcher (--dispatcher-config)\n{}",
            dispatcher.to_toml()
        );
        return Ok(());
    }
    gateway::signal::block_gateway_signals();
    let d = dispatcher::Dispatcher::start(dispatcher).context("starting the dispatcher")?;
    if gateway.dispatchers.is_empty() {
        gateway.dispatchers = vec![d.link_addr().to_string()];
    }
    if gateway.public_addrs.is_empty()
        && let Ok(addr) = gateway.tcp_bind.parse::<std::net::SocketAddr>()
        && !addr.ip().is_unspecified()
    {
        // What /goim/nodes/weighted tells clients to dial (goim: the comet's public IPs).
        gateway.public_addrs = vec![addr.ip().to_string()];
    }
    if gateway.auth.mode == "open" {
        eprintln!(
            "WARNING: auth mode is \"open\": any client may join any room with an unsigned token \
             (goim's behaviour). Set [auth] mode = \"hmac\" and secrets in the gateway config for \
             production."
        );
    }
    let gw = gateway::Gateway::start(gateway).context("starting the gateway")?;
    eprintln!(
        "corecast up: clients on tcp {} and ws://{}/sub, goim HTTP API on http://{}/goim/ \
         (try: curl -d 'hello' 'http://{}/goim/push/room?operation=1000&type=live&room=1000')",
        gw.tcp_addr(),
        gw.ws_addr(),
        d.http_addr(),
        d.http_addr()
    );
    if let Some(m) = gw.metrics_addr() {
        eprintln!(
            "corecast up: Prometheus metrics on http://{m}/metrics (gateway) and http://{}/metrics (dispatcher)",
            d.http_addr()
        );
    }
    if let Some(wss) = gw.wss_addr() {
        eprintln!("corecast up: WSS clients on wss://{wss}/sub (SIGHUP reloads the certificate)");
    }
    // SIGHUP reloads the WSS certificate; SIGTERM/SIGINT drain.
    let sig = gateway::signal::serve_until_terminated(&gw);
    tracing::info!(signal = sig, "draining");
    // Pushes already accepted reach the clients first, then the clients are let go.
    d.stop();
    gw.drain();
    gw.wait();
    Ok(())
}
