//! `corecast up` as a real process: goim's HTTP pushes reach real TCP and WebSocket clients,
//! with op filtering for keys, mids and broadcasts; online and node routes answer goim's
//! shapes with the right numbers.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{DISPATCHER_TOML, GATEWAY_TOML, Up, bodies, client, listen};

fn ok(v: &serde_json::Value) {
    assert_eq!(v["code"], 0, "{v}");
}

#[test]
fn http_pushes_reach_tcp_and_ws_clients_with_op_filtering() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    // a: TCP, room live://1, mid 1, watches 1000. b: WS, live://1, mid 1, watches 1001.
    // c: TCP, live://2, mid 2, watches 1000 and 1001.
    let mut a = client(&up, false, "live://1", 1, "key-a", &[1000]);
    a.count = Some(3);
    let mut b = client(&up, true, "live://1", 1, "key-b", &[1001]);
    b.count = Some(4);
    let mut c = client(&up, false, "live://2", 2, "key-c", &[1000, 1001]);
    c.count = Some(3);
    let (a, b, c) = (listen(a), listen(b), listen(c));
    up.wait_conns(3);
    let pace = || std::thread::sleep(Duration::from_millis(100));
    // A room push reaches every member whatever it watches (goim).
    ok(&up.post("/goim/push/room?operation=1000&type=live&room=1", b"r1"));
    pace();
    // Key pushes: to the keys named, only where the op is watched.
    ok(&up.post(
        "/goim/push/keys?operation=1000&keys=key-a&keys=key-c",
        b"k1",
    ));
    ok(&up.post("/goim/push/keys?operation=1000&keys=key-b", b"not-for-b"));
    ok(&up.post(
        "/goim/push/keys?operation=1001&keys=key-b&keys=unknown",
        b"k3",
    ));
    pace();
    // Mid pushes: every key of mid 1 (a and b), filtered by op: only b watches 1001.
    ok(&up.post("/goim/push/mids?operation=1001&mids=1", b"m1"));
    pace();
    // Broadcasts: everyone watching the op.
    ok(&up.post("/goim/push/all?operation=1000", b"all1"));
    pace();
    ok(&up.post("/goim/push/all?operation=1001&speed=1000", b"all2"));
    let (a, b, c) = (a.join().unwrap(), b.join().unwrap(), c.join().unwrap());
    assert_eq!(bodies(&a), ["r1", "k1", "all1"], "a: {a:?}");
    assert_eq!(bodies(&b), ["r1", "k3", "m1", "all2"], "b: {b:?}");
    assert_eq!(bodies(&c), ["k1", "all1", "all2"], "c: {c:?}");
    // Each push frame carries the op it was pushed with.
    assert_eq!(b[2]["op"], 1001);
}

#[test]
fn online_and_node_routes_answer_goims_shapes() {
    let up = Up::start(GATEWAY_TOML, DISPATCHER_TOML);
    let mut clients = Vec::new();
    for (room, n) in [
        ("live://10", 1),
        ("live://20", 2),
        ("live://30", 3),
        ("game://1", 1),
    ] {
        for i in 0..n {
            let ws = i % 2 == 1;
            clients.push(listen(client(&up, ws, room, 0, "", &[1000])));
        }
    }
    up.wait_conns(7);
    up.wait_for("room counts", |up| {
        up.get("/goim/online/room?type=live&rooms=30")["data"]["30"] == 3
    });
    let top = up.get("/goim/online/top?type=live&limit=2");
    assert_eq!(
        top,
        json!({"code": 0, "message": "", "data": [
            {"room_id": "30", "count": 3}, {"room_id": "20", "count": 2}
        ]})
    );
    let top = up.get("/goim/online/top?type=game&limit=10");
    assert_eq!(top["data"], json!([{"room_id": "1", "count": 1}]));
    assert_eq!(
        up.get("/goim/online/top?type=none&limit=10")["data"],
        json!([])
    );
    let rooms = up.get("/goim/online/room?type=live&rooms=10&rooms=20&rooms=30&rooms=99");
    assert_eq!(rooms["data"], json!({"10": 1, "20": 2, "30": 3, "99": 0}));
    let total = up.get("/goim/online/total");
    // Seven connections from one address (goim's ip_count: distinct source addresses).
    assert_eq!(total["data"], json!({"ip_count": 1, "conn_count": 7}));
    let nodes = up.get("/goim/nodes/weighted?platform=android");
    ok(&nodes);
    let d = &nodes["data"];
    assert_eq!(d["nodes"], json!(["127.0.0.1"]));
    assert_eq!(
        (d["tcp_port"].clone(), d["ws_port"].clone()),
        (json!(3101), json!(3102))
    );
    assert_eq!(
        (d["heartbeat"].clone(), d["heartbeat_max"].clone()),
        (json!(240), json!(2))
    );
    assert_eq!(
        d["backoff"],
        json!({"max_delay": 300, "base_delay": 3, "factor": 1.8, "jitter": 0.3})
    );
    assert!(d.get("wss_port").is_none(), "zero values are omitted: {d}");
    let web = up.get("/goim/nodes/weighted?platform=web");
    assert_eq!(web["data"]["nodes"], json!(["gw-up"]));
    let inst = up.get("/goim/nodes/instances");
    let list = inst["data"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["hostname"], "gw-up");
    assert_eq!(list[0]["appid"], "goim.comet");
    assert_eq!(list[0]["addrs"], json!(["127.0.0.1"]));
    assert_eq!(list[0]["metadata"]["conn_count"], "7");
    assert_eq!(list[0]["metadata"]["offline"], "false");
    drop(up);
    for c in clients {
        let _ = c.join();
    }
}
