//! goim's HTTP API under `/goim/` (logic role): pushes are resolved (keys and mids through the
//! registry), turned into goim `PushMsg`s and produced to the queue; the call answers once the
//! queue holds them. Online counts and the node list come from the gateways' reports.
//!
//! Every answer is HTTP 200 with goim's envelope `{"code", "message", "data"}`: 0 OK, -400 a bad
//! request (the message names the parameter), -500 a queue or registry failure (the message
//! names the cause; bounded by `http.request_timeout_ms`, never a hang). `GET /metrics` serves
//! the dispatcher's Prometheus counters.
//!
//! With `http.bearer_secrets` set, every `/goim/*` route first checks `Authorization: Bearer
//! <secret>` against each secret (SHA-256 digests compared in constant time, every secret
//! tried): a missing or wrong one is answered with HTTP 401, code -401, a message naming what
//! is missing and `WWW-Authenticate: Bearer`, counted per route. `/metrics` stays open.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use protocol::push::{PushMsg, PushType};
use protocol::query::Params;
use serde::Serialize;
use serde_json::{Value, json};

use crate::App;
use crate::metrics::route;
use crate::nodes::{Backoff, Node, NodesReply};

/// The router for `App`.
pub(crate) fn router(app: Arc<App>) -> Router {
    let goim = Router::new()
        .route("/goim/push/keys", post(push_keys))
        .route("/goim/push/mids", post(push_mids))
        .route("/goim/push/room", post(push_room))
        .route("/goim/push/all", post(push_all))
        .route("/goim/online/top", get(online_top))
        .route("/goim/online/room", get(online_room))
        .route("/goim/online/total", get(online_total))
        .route("/goim/nodes/weighted", get(nodes_weighted))
        .route("/goim/nodes/instances", get(nodes_instances))
        .route("/goim/room/history", get(room_history))
        .route_layer(middleware::from_fn_with_state(app.clone(), bearer));
    Router::new()
        .merge(goim)
        .merge(crate::demo::routes())
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(app)
}

/// The metrics route index of a `/goim/*` path.
fn route_of(path: &str) -> usize {
    match path {
        "/goim/push/keys" => route::PUSH_KEYS,
        "/goim/push/mids" => route::PUSH_MIDS,
        "/goim/push/room" => route::PUSH_ROOM,
        "/goim/push/all" => route::PUSH_ALL,
        "/goim/online/top" => route::ONLINE_TOP,
        "/goim/online/room" => route::ONLINE_ROOM,
        "/goim/online/total" => route::ONLINE_TOTAL,
        "/goim/nodes/weighted" => route::NODES_WEIGHTED,
        "/goim/nodes/instances" => route::NODES_INSTANCES,
        "/goim/room/history" => route::ROOM_HISTORY,
        _ => route::OTHER,
    }
}

/// Why a request's bearer secret is not accepted, if it is not.
fn bearer_problem(secrets: &[String], headers: &HeaderMap) -> Option<&'static str> {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    if secrets.is_empty() {
        return None;
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Some(
            "missing Authorization header: this API needs \"Authorization: Bearer <secret>\"",
        );
    };
    let value = value.as_bytes();
    let token = match value.split_at_checked(7) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => token.trim_ascii(),
        _ => {
            return Some(
                "Authorization header is not \"Bearer <secret>\" (only the Bearer scheme is accepted)",
            );
        }
    };
    if token.is_empty() {
        return Some("Authorization header has an empty bearer secret");
    }
    // Digests have one length whatever the input, so neither the comparison nor its time
    // says anything about a secret's length or content.
    let given = Sha256::digest(token);
    let mut ok = subtle::Choice::from(0);
    for s in secrets {
        ok |= Sha256::digest(s.as_bytes()).ct_eq(&given);
    }
    if bool::from(ok) {
        None
    } else {
        Some("wrong bearer secret: it matches none of the dispatcher's http.bearer_secrets")
    }
}

/// The bearer check in front of every `/goim/*` route.
async fn bearer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(problem) = bearer_problem(&app.config.http.bearer_secrets, req.headers()) else {
        return next.run(req).await;
    };
    let route = route_of(req.uri().path());
    app.metrics.request(route, -401);
    tracing::debug!("{}: code -401: {problem}", crate::metrics::ROUTES[route]);
    let challenge = if problem.starts_with("wrong") {
        "Bearer realm=\"corecast\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"corecast\""
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::WWW_AUTHENTICATE, challenge),
        ],
        json!({"code": -401, "message": problem}).to_string(),
    )
        .into_response()
}

/// A goim answer: code, message, and data when there is some.
struct Reply {
    code: i32,
    message: String,
    data: Option<Value>,
}

impl Reply {
    fn ok(data: Option<Value>) -> Reply {
        Reply {
            code: 0,
            message: String::new(),
            data,
        }
    }
    fn bad(message: String) -> Reply {
        Reply {
            code: -400,
            message,
            data: None,
        }
    }
    fn failed(message: String) -> Reply {
        Reply {
            code: -500,
            message,
            data: None,
        }
    }
}

/// Counts, logs and renders one answer.
fn answer(app: &App, route: usize, started: Instant, reply: Reply) -> Response {
    app.metrics.request(route, reply.code);
    let name = crate::metrics::ROUTES[route];
    // Failures of the service are warnings; bad requests are the caller's (debug, so a
    // misbehaving client cannot flood the log; they are counted per route in /metrics).
    match reply.code {
        0 => tracing::debug!("{name}: code 0 in {:?}", started.elapsed()),
        code @ (-400 | -404 | -410) => tracing::debug!(
            "{name}: code {code} in {:?}: {}",
            started.elapsed(),
            reply.message
        ),
        code => tracing::warn!(
            "{name}: code {code} in {:?}: {}",
            started.elapsed(),
            reply.message
        ),
    }
    let mut body = serde_json::Map::new();
    body.insert("code".into(), json!(reply.code));
    body.insert("message".into(), json!(reply.message));
    if let Some(data) = reply.data {
        body.insert("data".into(), data);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        Value::Object(body).to_string(),
    )
        .into_response()
}

/// Runs `f` within the request timeout; a timeout is a -500 naming `what`.
async fn bounded<T>(
    app: &App,
    what: &str,
    f: impl Future<Output = crate::Result<T>>,
) -> Result<T, Reply> {
    let ms = app.config.http.request_timeout_ms;
    match tokio::time::timeout(Duration::from_millis(ms), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Reply::failed(e.to_string())),
        Err(_) => Err(Reply::failed(format!(
            "{what} did not answer within {ms} ms"
        ))),
    }
}

/// Reads the request body (the message) within the size limit.
async fn read_body(app: &App, body: Body) -> Result<Vec<u8>, Reply> {
    let max = app.config.http.max_body_bytes;
    let ms = app.config.http.request_timeout_ms;
    let read = tokio::time::timeout(Duration::from_millis(ms), axum::body::to_bytes(body, max));
    let Ok(read) = read.await else {
        return Err(Reply::bad(format!("body: not received within {ms} ms")));
    };
    match read {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            // to_bytes fails for a body over the limit, or a broken body.
            let text = e.to_string();
            if text.contains("length limit") {
                Err(Reply::bad(format!(
                    "body: larger than the {max}-byte limit"
                )))
            } else {
                Err(Reply::bad(format!("body: could not be read: {text}")))
            }
        }
    }
}

/// Produces every message to the queue, in order.
async fn produce_all(app: &App, msgs: Vec<PushMsg>) -> Result<(), Reply> {
    let backend = app.queue.backend();
    for msg in msgs {
        bounded(app, backend, app.queue.produce(msg)).await?;
        crate::metrics::inc(&app.metrics.queue_produced);
    }
    Ok(())
}

fn key_pushes(op: i32, routes: crate::registry::Routes, body: &[u8]) -> Vec<PushMsg> {
    routes
        .into_iter()
        .map(|(server, keys)| PushMsg {
            r#type: PushType::Push as i32,
            operation: op,
            server,
            keys,
            msg: body.to_vec(),
            ..Default::default()
        })
        .collect()
}

async fn push_keys(State(app): State<Arc<App>>, RawQuery(q): RawQuery, body: Body) -> Response {
    let t = Instant::now();
    let reply = async {
        let p = Params::parse(q.as_deref());
        let op = p.i32_or("operation", 0).map_err(Reply::bad)?;
        let keys = p.list("keys");
        if keys.is_empty() {
            return Err(Reply::bad("keys: at least one key is required".into()));
        }
        let body = read_body(&app, body).await?;
        let routes = bounded(
            &app,
            app.registry.backend(),
            app.registry.routes_by_keys(&keys),
        )
        .await?;
        produce_all(&app, key_pushes(op, routes, &body)).await?;
        Ok(Reply::ok(None))
    }
    .await;
    answer(&app, route::PUSH_KEYS, t, reply.unwrap_or_else(|r| r))
}

async fn push_mids(State(app): State<Arc<App>>, RawQuery(q): RawQuery, body: Body) -> Response {
    let t = Instant::now();
    let reply = async {
        let p = Params::parse(q.as_deref());
        let op = p.i32_or("operation", 0).map_err(Reply::bad)?;
        let mids = p.list_i64("mids").map_err(Reply::bad)?;
        let body = read_body(&app, body).await?;
        if mids.is_empty() {
            // goim: an empty list is OK and does nothing.
            return Ok(Reply::ok(None));
        }
        let routes = bounded(
            &app,
            app.registry.backend(),
            app.registry.routes_by_mids(&mids),
        )
        .await?;
        produce_all(&app, key_pushes(op, routes, &body)).await?;
        Ok(Reply::ok(None))
    }
    .await;
    answer(&app, route::PUSH_MIDS, t, reply.unwrap_or_else(|r| r))
}

async fn push_room(State(app): State<Arc<App>>, RawQuery(q): RawQuery, body: Body) -> Response {
    let t = Instant::now();
    let reply = async {
        let p = Params::parse(q.as_deref());
        let op = p.i32_nonzero("operation").map_err(Reply::bad)?;
        let kind = p.required("type").map_err(Reply::bad)?;
        let room = p.required("room").map_err(Reply::bad)?;
        let body = read_body(&app, body).await?;
        let msg = PushMsg {
            r#type: PushType::Room as i32,
            operation: op,
            room: format!("{kind}://{room}"),
            msg: body,
            ..Default::default()
        };
        produce_all(&app, vec![msg]).await?;
        Ok(Reply::ok(None))
    }
    .await;
    answer(&app, route::PUSH_ROOM, t, reply.unwrap_or_else(|r| r))
}

async fn push_all(State(app): State<Arc<App>>, RawQuery(q): RawQuery, body: Body) -> Response {
    let t = Instant::now();
    let reply = async {
        let p = Params::parse(q.as_deref());
        let op = p.i32_nonzero("operation").map_err(Reply::bad)?;
        let speed = p.i32_or("speed", 0).map_err(Reply::bad)?;
        if speed < 0 {
            return Err(Reply::bad(format!(
                "speed: {speed} is negative (connections per second; 0 or absent: unpaced)"
            )));
        }
        let body = read_body(&app, body).await?;
        let msg = PushMsg {
            r#type: PushType::Broadcast as i32,
            operation: op,
            speed,
            msg: body,
            ..Default::default()
        };
        produce_all(&app, vec![msg]).await?;
        Ok(Reply::ok(None))
    }
    .await;
    answer(&app, route::PUSH_ALL, t, reply.unwrap_or_else(|r| r))
}

#[derive(Serialize)]
struct Top {
    room_id: String,
    count: i64,
}

async fn online_top(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let t = Instant::now();
    let reply = (|| {
        let p = Params::parse(q.as_deref());
        let kind = p.required("type").map_err(Reply::bad)?;
        let limit = p.i32_nonzero("limit").map_err(Reply::bad)?;
        if limit < 0 {
            return Err(Reply::bad(format!("limit: {limit} is negative")));
        }
        // goim: a plain prefix match on the room key, room_id without "type://".
        let mut top: Vec<Top> = app
            .cluster
            .room_totals()
            .into_iter()
            .filter(|(room, n)| room.starts_with(&kind) && *n > 0)
            .map(|(room, count)| Top {
                room_id: room
                    .split_once("://")
                    .map(|(_, id)| id.to_string())
                    .unwrap_or(room),
                count,
            })
            .collect();
        top.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        top.truncate(limit as usize);
        Ok(Reply::ok(Some(json!(top))))
    })();
    answer(&app, route::ONLINE_TOP, t, reply.unwrap_or_else(|r| r))
}

async fn online_room(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let t = Instant::now();
    let reply = (|| {
        let p = Params::parse(q.as_deref());
        let kind = p.required("type").map_err(Reply::bad)?;
        let rooms = p.list("rooms");
        if rooms.is_empty() {
            return Err(Reply::bad("rooms: at least one room is required".into()));
        }
        let totals = app.cluster.room_totals();
        let counts: BTreeMap<String, i64> = rooms
            .into_iter()
            .map(|r| {
                let n = totals.get(&format!("{kind}://{r}")).copied().unwrap_or(0);
                (r, n)
            })
            .collect();
        Ok(Reply::ok(Some(json!(counts))))
    })();
    answer(&app, route::ONLINE_ROOM, t, reply.unwrap_or_else(|r| r))
}

/// `GET /goim/room/history?type=live&room=1000[&since=N]`: the messages the room's history holds
/// after offset `since` (all it holds without it), oldest first, each with its offset (the
/// `seq` of its frame as clients got it), op and body (UTF-8, lossy). Too old (the messages
/// after `since` are gone, or `since` is from before a restart): code -410 with the reason; no
/// history held for the room here: code -404.
async fn room_history(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    use crate::history::Since;
    let t = Instant::now();
    let reply = (|| {
        let p = Params::parse(q.as_deref());
        let kind = p.required("type").map_err(Reply::bad)?;
        let room = p.required("room").map_err(Reply::bad)?;
        let since = match p.list("since").first() {
            None => None,
            Some(s) => Some(s.parse::<u32>().map_err(|_| {
                Reply::bad(format!(
                    "since: {s:?} is not an offset (a decimal number from 0 to 4294967295)"
                ))
            })?),
        };
        let key = format!("{kind}://{room}");
        let history = app.history.lock().unwrap_or_else(|p| p.into_inner());
        let unknown = || Reply {
            code: -404,
            message: format!(
                "no history is held for room {key} here (never pushed through this dispatcher, or idle for twice history.max_age_ms)"
            ),
            data: None,
        };
        let (frames, newest): (Vec<Bytes>, u32) = match since {
            None => {
                let (msgs, newest) = history.all(&key).ok_or_else(unknown)?;
                (msgs.into_iter().map(|(_, f)| f).collect(), newest)
            }
            Some(since) => match history.since(&key, since) {
                Since::Found { frames, newest } => (frames, newest),
                Since::TooOld { detail, .. } => {
                    return Err(Reply {
                        code: -410,
                        message: format!("too old: {detail}"),
                        data: None,
                    });
                }
                Since::Unknown => return Err(unknown()),
            },
        };
        drop(history);
        let messages: Vec<Value> = frames.iter().filter_map(|f| message_json(f)).collect();
        Ok(Reply::ok(Some(
            json!({"room": key, "newest": newest, "messages": messages}),
        )))
    })();
    answer(&app, route::ROOM_HISTORY, t, reply.unwrap_or_else(|r| r))
}

/// One history frame as `{"offset", "op", "msg"}`.
fn message_json(frame: &[u8]) -> Option<Value> {
    let head = frame.first_chunk::<{ protocol::frame::HEADER_LEN }>()?;
    let op = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let offset = u32::from_be_bytes([head[12], head[13], head[14], head[15]]);
    let body = String::from_utf8_lossy(&frame[protocol::frame::HEADER_LEN..]);
    Some(json!({"offset": offset, "op": op, "msg": body}))
}

async fn online_total(State(app): State<Arc<App>>) -> Response {
    let t = Instant::now();
    let (mut ips, mut conns) = (0u64, 0u64);
    for g in app.cluster.infos().iter().filter(|g| g.counted) {
        ips += g.ip_count;
        conns += g.conn_count;
    }
    let data = json!({"ip_count": ips, "conn_count": conns});
    answer(&app, route::ONLINE_TOTAL, t, Reply::ok(Some(data)))
}

async fn nodes_weighted(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let t = Instant::now();
    let p = Params::parse(q.as_deref());
    let platform = p.list("platform").into_iter().next().unwrap_or_default();
    let node = &app.config.node;
    let infos = app.cluster.infos();
    let live: Vec<Node> = infos
        .iter()
        .filter(|g| !g.offline)
        .cloned()
        .map(|g| Node {
            id: g.id,
            weight: i64::from(g.weight),
            conn_count: i64::try_from(g.conn_count).unwrap_or(i64::MAX),
            addrs: g.addrs,
        })
        .collect();
    let refusing: Vec<String> = infos
        .iter()
        .filter(|g| g.refusing)
        .flat_map(|g| g.addrs.iter().cloned())
        .collect();
    let mut nodes = {
        let mut b = app.balancer.lock().unwrap_or_else(|p| p.into_inner());
        b.update(&live);
        b.pick(
            &platform,
            node.region_weight,
            &node.host_domain,
            &node.default_domain,
        )
    };
    // goim's guard may keep a node the balancer last saw; one that said it takes no
    // connections (draining, over its memory ceiling) is never handed out.
    nodes.retain(|n| !refusing.contains(n));
    let b = &app.config.backoff;
    let reply = NodesReply {
        domain: node.default_domain.clone(),
        tcp_port: node.tcp_port,
        ws_port: node.ws_port,
        wss_port: node.wss_port,
        heartbeat: node.heartbeat_secs,
        heartbeat_max: node.heartbeat_max,
        nodes,
        backoff: Some(Backoff {
            max_delay: b.max_delay,
            base_delay: b.base_delay,
            factor: b.factor,
            jitter: b.jitter,
        }),
    };
    // Through text, so f32 knobs print as written (1.8, not 1.7999999523162842), as goim's do.
    let data = serde_json::to_string(&reply)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    answer(&app, route::NODES_WEIGHTED, t, Reply::ok(Some(data)))
}

async fn nodes_instances(State(app): State<Arc<App>>) -> Response {
    let t = Instant::now();
    // goim's discovery instance shape; metadata values are strings, as in discovery.
    let list: Vec<Value> = app
        .cluster
        .infos()
        .into_iter()
        .map(|g| {
            json!({
                "region": "",
                "zone": "",
                "env": "",
                "appid": "goim.comet",
                "hostname": g.id,
                "addrs": g.addrs,
                "version": env!("CARGO_PKG_VERSION"),
                "latest_timestamp": g.updated_unix_ns,
                "metadata": {
                    "weight": g.weight.to_string(),
                    "offline": g.offline.to_string(),
                    "addrs": g.addrs.join(","),
                    "conn_count": g.conn_count.to_string(),
                    "ip_count": g.ip_count.to_string(),
                },
            })
        })
        .collect();
    answer(
        &app,
        route::NODES_INSTANCES,
        t,
        Reply::ok(Some(Value::Array(list))),
    )
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = crate::metrics::exposition(&app).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// Unknown paths: HTTP 404 with gin's body, as goim answers them.
async fn not_found(State(app): State<Arc<App>>) -> Response {
    app.metrics.request(route::OTHER, -400);
    (StatusCode::NOT_FOUND, "404 page not found").into_response()
}
