//! An API server stand-in for the DRA driver: HTTP/1.1 on `127.0.0.1:<ephemeral>`,
//! speaking the real REST paths and JSON of `resource.k8s.io/v1`.
//!
//! - `GET    /apis/resource.k8s.io/v1/resourceslices` (`fieldSelector` on
//!   `metadata.name`, `spec.nodeName`, `spec.driver`, `spec.pool.name`, `=`/`==`/`!=`;
//!   `resourceVersion` accepted; `watch=true` streams events from then on);
//! - `POST   /apis/resource.k8s.io/v1/resourceslices`;
//! - `GET|PUT|DELETE /apis/resource.k8s.io/v1/resourceslices/{name}`;
//! - `GET    /apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}` (claims are
//!   seeded by the test with [`ApiServer::seed_claim`]).
//!
//! It is independent of the client crates (serde_json values only) and stricter than the
//! real server's defaults: it checks every ResourceSlice written against the published
//! v1 schema and validation rules (unknown fields, required fields, exactly one of
//! `nodeName`/`nodeSelector`/`allNodes`/`perDeviceNodeSelection`, at most 128 devices,
//! DNS-label device names unique in the slice, qualified attribute names, exactly one
//! attribute value, string values of at most 64 characters, at most 32 attributes and
//! capacities per device, immutable `driver`/`nodeName`/`pool.name`) and answers 422
//! `Invalid` with the causes, 409 on a stale `resourceVersion` or an existing name, 404
//! for what is not there, in `metav1.Status` JSON. Every request is recorded
//! ([`ApiServer::requests`]) with its body size, for the tests and the bench.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

const PREFIX: &str = "/apis/resource.k8s.io/v1/";
const API_VERSION: &str = "resource.k8s.io/v1";
/// `spec.devices` limit.
pub const MAX_DEVICES: usize = 128;

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Status answered.
    pub status: u16,
    /// Request body size.
    pub request_bytes: usize,
    /// Response body size (0 for a watch stream).
    pub response_bytes: usize,
}

/// The consistency of one pool across its slices, from [`ApiServer::pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSummary {
    /// The generation all slices carry.
    pub generation: i64,
    /// Number of slices (equal to every slice's `resourceSliceCount`).
    pub slices: usize,
    /// Device names across all slices (each once).
    pub devices: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    slices: BTreeMap<String, Value>,
    claims: BTreeMap<(String, String), Value>,
    rv: u64,
    uid: u64,
    log: Vec<Recorded>,
    watchers: Vec<(Vec<Selector>, mpsc::UnboundedSender<Bytes>)>,
    /// Writes to answer with 409 Conflict before touching anything (another writer won).
    conflicts: usize,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn notify(&mut self, kind: &str, obj: &Value) {
        let mut line = json!({"type": kind, "object": obj}).to_string();
        line.push('\n');
        let b = Bytes::from(line);
        self.watchers
            .retain(|(sel, tx)| !selects(sel, obj) || tx.send(b.clone()).is_ok());
    }
}

/// A running stand-in; stops when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ApiServer {
    /// Listen on `127.0.0.1:0` and serve until dropped.
    pub async fn start() -> std::io::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // A client going away mid-request is its business, not the server's.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Ok(ApiServer { addr, state, task })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Write a kubeconfig pointing at this server (no credentials), for binaries that
    /// take `--kubeconfig` or `KUBECONFIG` (through a temporary file and a rename).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             users:\n- name: standin\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    \
             cluster: standin\n    user: standin\ncurrent-context: standin\n",
            self.url()
        );
        // whole or not at all: a script may wait for the file to appear, then read it
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// Every stored ResourceSlice, by name.
    pub fn slices(&self) -> BTreeMap<String, Value> {
        self.lock().slices.clone()
    }

    /// Store a ResourceSlice directly (another node's or driver's, say), validated like a
    /// create. Returns the stored object.
    pub fn insert_slice(&self, mut obj: Value) -> Result<Value, String> {
        let causes = validate_slice(&obj);
        if !causes.is_empty() {
            return Err(format!("{causes:?}"));
        }
        let mut st = self.lock();
        stamp(&mut st, &mut obj, None);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        st.slices.insert(name, obj.clone());
        Ok(obj)
    }

    /// Seed ResourceClaim `ns/name` (`metadata` namespace, name, uid and resourceVersion
    /// are filled in when missing).
    pub fn seed_claim(&self, ns: &str, name: &str, mut claim: Value) {
        let mut st = self.lock();
        let rv = st.next_rv();
        st.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", st.uid);
        if let Some(m) = claim.as_object_mut() {
            m.entry("apiVersion").or_insert(json!(API_VERSION));
            m.entry("kind").or_insert(json!("ResourceClaim"));
            let meta = m.entry("metadata").or_insert(json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("name".into(), json!(name));
                meta.insert("namespace".into(), json!(ns));
                meta.entry("uid").or_insert(json!(uid));
                meta.entry("resourceVersion").or_insert(json!(rv));
            }
        }
        st.claims.insert((ns.to_string(), name.to_string()), claim);
    }

    /// Answer the next `n` slice writes (POST, PUT) with 409 Conflict, as when another
    /// writer got there between the client's list and its write.
    pub fn conflict_next_writes(&self, n: usize) {
        self.lock().conflicts = n;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Request body bytes received so far.
    pub fn bytes_received(&self) -> usize {
        self.lock().log.iter().map(|r| r.request_bytes).sum()
    }

    /// The pool `pool` of `driver` as a consumer would judge it: every slice at one
    /// generation, as many slices as `resourceSliceCount` says, no device twice.
    pub fn pool(&self, driver: &str, pool: &str) -> Result<PoolSummary, String> {
        let st = self.lock();
        let slices: Vec<&Value> = st
            .slices
            .values()
            .filter(|s| s["spec"]["driver"] == driver && s["spec"]["pool"]["name"] == pool)
            .collect();
        if slices.is_empty() {
            return Err(format!("no slices for pool {pool} of {driver}"));
        }
        let gens: BTreeSet<i64> = slices
            .iter()
            .filter_map(|s| s["spec"]["pool"]["generation"].as_i64())
            .collect();
        let counts: BTreeSet<i64> = slices
            .iter()
            .filter_map(|s| s["spec"]["pool"]["resourceSliceCount"].as_i64())
            .collect();
        if gens.len() != 1 || counts.len() != 1 {
            return Err(format!("mixed generations {gens:?} / counts {counts:?}"));
        }
        let count = counts.into_iter().next().unwrap_or(0);
        if count != slices.len() as i64 {
            return Err(format!(
                "resourceSliceCount {count}, {} slices",
                slices.len()
            ));
        }
        let mut devices = BTreeSet::new();
        for s in &slices {
            for d in s["spec"]["devices"].as_array().into_iter().flatten() {
                let n = d["name"].as_str().unwrap_or_default().to_string();
                if !devices.insert(n.clone()) {
                    return Err(format!("device {n} in two slices"));
                }
            }
        }
        Ok(PoolSummary {
            generation: gens.into_iter().next().unwrap_or(0),
            slices: slices.len(),
            devices,
        })
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: Vec<u8>) -> Body {
    Full::new(Bytes::from(b)).boxed()
}

fn respond(code: StatusCode, v: &Value) -> (Response<Body>, usize) {
    let b = serde_json::to_vec(v).unwrap_or_default();
    let n = b.len();
    let resp = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(b))
        .unwrap_or_else(|_| Response::new(full(vec![])));
    (resp, n)
}

fn status(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

/// One validation failure, as in `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueTooMany`, ...
    pub reason: &'static str,
    /// The field path (`spec.devices[3].name`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(name: &str, causes: &[Cause]) -> Value {
    let msg = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect::<Vec<_>>()
        .join(", ");
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("ResourceSlice.resource.k8s.io \"{name}\" is invalid: [{msg}]"),
        Some(json!({
            "name": name, "group": "resource.k8s.io", "kind": "ResourceSlice",
            "causes": causes.iter().map(|c| json!({
                "reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        })),
    )
}

async fn handle(st: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let watch = method == Method::GET && query_param(query.as_deref(), "watch") == Some("true");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (resp, out) = if watch {
        start_watch(st, &path, query.as_deref())
    } else {
        route(st, &method, &path, query.as_deref(), &body)
    };
    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
    s.log.push(Recorded {
        method: method.to_string(),
        path,
        query,
        status: resp.status().as_u16(),
        request_bytes: body.len(),
        response_bytes: out,
    });
    resp
}

fn query_param<'a>(q: Option<&'a str>, key: &str) -> Option<&'a str> {
    q?.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One term of a field selector.
#[derive(Debug, Clone)]
struct Selector {
    field: String,
    value: String,
    negate: bool,
}

const SELECTABLE: [&str; 4] = [
    "metadata.name",
    "spec.nodeName",
    "spec.driver",
    "spec.pool.name",
];

fn parse_selector(q: Option<&str>) -> Result<Vec<Selector>, String> {
    let Some(raw) = query_param(q, "fieldSelector") else {
        return Ok(vec![]);
    };
    let text = percent_decode(raw);
    let mut out = Vec::new();
    for term in text.split(',').filter(|t| !t.is_empty()) {
        let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, false)
        } else {
            return Err(format!(
                "invalid selector: '{text}'; can't understand '{term}'"
            ));
        };
        if !SELECTABLE.contains(&field) {
            return Err(format!("field label not supported: {field}"));
        }
        out.push(Selector {
            field: field.to_string(),
            value: value.to_string(),
            negate,
        });
    }
    Ok(out)
}

fn field_of<'a>(obj: &'a Value, field: &str) -> &'a str {
    let v = field.split('.').fold(obj, |v, k| &v[k]);
    v.as_str().unwrap_or("")
}

fn selects(sel: &[Selector], obj: &Value) -> bool {
    sel.iter()
        .all(|s| (field_of(obj, &s.field) == s.value) != s.negate)
}

fn start_watch(st: &Arc<Mutex<State>>, path: &str, q: Option<&str>) -> (Response<Body>, usize) {
    if path.trim_end_matches('/') != format!("{PREFIX}resourceslices") {
        return not_found(path);
    }
    let sel = match parse_selector(q) {
        Ok(s) => s,
        Err(m) => {
            return respond(
                StatusCode::BAD_REQUEST,
                &status(StatusCode::BAD_REQUEST, "BadRequest", m, None),
            );
        }
    };
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    st.lock()
        .unwrap_or_else(|p| p.into_inner())
        .watchers
        .push((sel, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed())
        .unwrap_or_else(|_| Response::new(full(vec![])));
    (resp, 0)
}

fn not_found(what: &str) -> (Response<Body>, usize) {
    respond(
        StatusCode::NOT_FOUND,
        &status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{what} not found"),
            None,
        ),
    )
}

fn slice_not_found(name: &str) -> (Response<Body>, usize) {
    respond(
        StatusCode::NOT_FOUND,
        &status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("resourceslices.resource.k8s.io \"{name}\" not found"),
            Some(json!({"name": name, "group": "resource.k8s.io", "kind": "resourceslices"})),
        ),
    )
}

fn route(
    st: &Arc<Mutex<State>>,
    method: &Method,
    path: &str,
    q: Option<&str>,
    body: &[u8],
) -> (Response<Body>, usize) {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return not_found(path);
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
    if s.conflicts > 0
        && matches!(*method, Method::POST | Method::PUT)
        && parts.first() == Some(&"resourceslices")
    {
        s.conflicts -= 1;
        let name = parts.get(1).copied().unwrap_or("");
        return respond(
            StatusCode::CONFLICT,
            &status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on resourceslices.resource.k8s.io \"{name}\": the object has been modified"
                ),
                None,
            ),
        );
    }
    match (method, parts.as_slice()) {
        (&Method::GET, ["resourceslices"]) => {
            let sel = match parse_selector(q) {
                Ok(s) => s,
                Err(m) => {
                    return respond(
                        StatusCode::BAD_REQUEST,
                        &status(StatusCode::BAD_REQUEST, "BadRequest", m, None),
                    );
                }
            };
            let items: Vec<Value> = s
                .slices
                .values()
                .filter(|o| selects(&sel, o))
                .cloned()
                .collect();
            respond(
                StatusCode::OK,
                &json!({"kind": "ResourceSliceList", "apiVersion": API_VERSION,
                        "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        (&Method::POST, ["resourceslices"]) => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_body(e),
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let causes = validate_slice(&obj);
            if !causes.is_empty() {
                return respond(StatusCode::UNPROCESSABLE_ENTITY, &invalid(&name, &causes));
            }
            if obj["metadata"].get("resourceVersion").is_some() {
                let c = [Cause {
                    reason: "FieldValueInvalid",
                    field: "metadata.resourceVersion".into(),
                    message: "must be empty on create".into(),
                }];
                return respond(StatusCode::UNPROCESSABLE_ENTITY, &invalid(&name, &c));
            }
            if s.slices.contains_key(&name) {
                return respond(
                    StatusCode::CONFLICT,
                    &status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("resourceslices.resource.k8s.io \"{name}\" already exists"),
                        Some(
                            json!({"name": name, "group": "resource.k8s.io", "kind": "resourceslices"}),
                        ),
                    ),
                );
            }
            stamp(&mut s, &mut obj, None);
            s.slices.insert(name, obj.clone());
            s.notify("ADDED", &obj);
            respond(StatusCode::CREATED, &obj)
        }
        (&Method::GET, ["resourceslices", name]) => match s.slices.get(*name) {
            Some(o) => respond(StatusCode::OK, o),
            None => slice_not_found(name),
        },
        (&Method::PUT, ["resourceslices", name]) => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_body(e),
            };
            let mut causes = validate_slice(&obj);
            if obj["metadata"]["name"] != *name {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: "metadata.name".into(),
                    message: format!("must match the name in the URL ({name})"),
                });
            }
            let Some(old) = s.slices.get(*name).cloned() else {
                return slice_not_found(name);
            };
            for f in ["driver", "nodeName"] {
                if old["spec"][f] != obj["spec"][f] {
                    causes.push(immutable(&format!("spec.{f}")));
                }
            }
            if old["spec"]["pool"]["name"] != obj["spec"]["pool"]["name"] {
                causes.push(immutable("spec.pool.name"));
            }
            if !causes.is_empty() {
                return respond(StatusCode::UNPROCESSABLE_ENTITY, &invalid(name, &causes));
            }
            if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                && old["metadata"]["resourceVersion"] != rv
            {
                return respond(
                    StatusCode::CONFLICT,
                    &status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on resourceslices.resource.k8s.io \"{name}\": \
                             the object has been modified; please apply your changes to the latest version and try again"
                        ),
                        Some(
                            json!({"name": name, "group": "resource.k8s.io", "kind": "resourceslices"}),
                        ),
                    ),
                );
            }
            stamp(&mut s, &mut obj, Some(&old));
            s.slices.insert(name.to_string(), obj.clone());
            s.notify("MODIFIED", &obj);
            respond(StatusCode::OK, &obj)
        }
        (&Method::DELETE, ["resourceslices", name]) => match s.slices.remove(*name) {
            Some(o) => {
                s.next_rv();
                s.notify("DELETED", &o);
                respond(StatusCode::OK, &o)
            }
            None => slice_not_found(name),
        },
        (&Method::GET, ["namespaces", ns, "resourceclaims", name]) => {
            match s.claims.get(&(ns.to_string(), name.to_string())) {
                Some(c) => respond(StatusCode::OK, c),
                None => respond(
                    StatusCode::NOT_FOUND,
                    &status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("resourceclaims.resource.k8s.io \"{name}\" not found"),
                        Some(
                            json!({"name": name, "group": "resource.k8s.io", "kind": "resourceclaims"}),
                        ),
                    ),
                ),
            }
        }
        (m, _)
            if !matches!(
                *m,
                Method::GET | Method::POST | Method::PUT | Method::DELETE
            ) =>
        {
            respond(
                StatusCode::METHOD_NOT_ALLOWED,
                &status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{m} is not supported by the stand-in"),
                    None,
                ),
            )
        }
        _ => not_found(path),
    }
}

fn immutable(field: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: "field is immutable".into(),
    }
}

fn bad_body(e: serde_json::Error) -> (Response<Body>, usize) {
    respond(
        StatusCode::BAD_REQUEST,
        &status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the body of the request was in an unknown format: {e}"),
            None,
        ),
    )
}

/// Server-set metadata: uid, resourceVersion, generation, creationTimestamp.
fn stamp(st: &mut State, obj: &mut Value, old: Option<&Value>) {
    let rv = st.next_rv();
    st.uid += 1;
    let uid = format!("00000000-0000-4000-8000-{:012x}", st.uid);
    let meta = &mut obj["metadata"];
    meta["resourceVersion"] = json!(rv);
    match old {
        Some(o) => {
            meta["uid"] = o["metadata"]["uid"].clone();
            meta["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
            let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
            let changed = o["spec"] != obj["spec"];
            obj["metadata"]["generation"] = json!(if changed { g + 1 } else { g });
        }
        None => {
            meta["uid"] = json!(uid);
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            meta["generation"] = json!(1);
        }
    }
}

// ---- validation: the resource.k8s.io/v1 ResourceSlice schema and rules ----

struct V {
    causes: Vec<Cause>,
}

impl V {
    fn push(&mut self, reason: &'static str, field: &str, message: impl Into<String>) {
        self.causes.push(Cause {
            reason,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// `v` must be an object with only `allowed` keys (strict decoding).
    fn object<'a>(
        &mut self,
        v: &'a Value,
        field: &str,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Some(m) = v.as_object() else {
            self.push("FieldValueTypeInvalid", field, "must be an object");
            return None;
        };
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                self.push(
                    "FieldValueNotSupported",
                    &format!("{field}.{k}"),
                    "unknown field",
                );
            }
        }
        Some(m)
    }

    fn string<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        k: &str,
        field: &str,
        required: bool,
    ) -> Option<&'a str> {
        match m.get(k) {
            None | Some(Value::Null) => {
                if required {
                    self.push(
                        "FieldValueRequired",
                        &format!("{field}.{k}"),
                        "Required value",
                    );
                }
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.push(
                    "FieldValueTypeInvalid",
                    &format!("{field}.{k}"),
                    "must be a string",
                );
                None
            }
        }
    }
}

fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

fn c_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn qualified_name(v: &mut V, name: &str, field: &str) {
    let (domain, id) = match name.split_once('/') {
        Some((d, i)) => (Some(d), i),
        None => (None, name),
    };
    if let Some(d) = domain
        && (d.len() > 63 || !dns_subdomain(d))
    {
        v.push(
            "FieldValueInvalid",
            field,
            format!("{name:?}: domain must be a DNS subdomain of at most 63 characters"),
        );
    }
    if id.len() > 32 || !c_identifier(id) {
        v.push(
            "FieldValueInvalid",
            field,
            format!("{name:?}: must be a C identifier of at most 32 characters"),
        );
    }
}

fn validate_attribute(v: &mut V, a: &Value, field: &str) {
    let Some(m) = v.object(a, field, &["int", "bool", "string", "version"]) else {
        return;
    };
    let set: Vec<&String> = m.keys().filter(|k| !m[k.as_str()].is_null()).collect();
    if set.len() != 1 {
        v.push(
            "FieldValueInvalid",
            field,
            "exactly one value must be specified",
        );
    }
    if let Some(x) = m.get("int")
        && !x.is_null()
        && x.as_i64().is_none()
    {
        v.push(
            "FieldValueTypeInvalid",
            &format!("{field}.int"),
            "must be an integer",
        );
    }
    if let Some(x) = m.get("bool")
        && !x.is_null()
        && !x.is_boolean()
    {
        v.push(
            "FieldValueTypeInvalid",
            &format!("{field}.bool"),
            "must be a boolean",
        );
    }
    for k in ["string", "version"] {
        if let Some(x) = m.get(k)
            && !x.is_null()
        {
            match x.as_str() {
                Some(s) if s.len() > 64 => v.push(
                    "FieldValueTooLong",
                    &format!("{field}.{k}"),
                    "may not be more than 64 bytes",
                ),
                Some(s) if k == "version" && !semver(s) => v.push(
                    "FieldValueInvalid",
                    &format!("{field}.version"),
                    "must be a semantic version",
                ),
                Some(_) => {}
                None => v.push(
                    "FieldValueTypeInvalid",
                    &format!("{field}.{k}"),
                    "must be a string",
                ),
            }
        }
    }
}

fn semver(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or("");
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

const DEVICE_FIELDS: [&str; 12] = [
    "name",
    "attributes",
    "capacity",
    "consumesCounters",
    "nodeName",
    "nodeSelector",
    "allNodes",
    "taints",
    "bindsToNode",
    "bindingConditions",
    "bindingFailureConditions",
    "allowMultipleAllocations",
];

/// Check a ResourceSlice against the v1 schema and validation; the causes, if any.
pub fn validate_slice(obj: &Value) -> Vec<Cause> {
    let mut v = V { causes: vec![] };
    let Some(top) = v.object(obj, "", &["apiVersion", "kind", "metadata", "spec"]) else {
        return v.causes;
    };
    if top.get("apiVersion").and_then(Value::as_str) != Some(API_VERSION) {
        v.push(
            "FieldValueInvalid",
            "apiVersion",
            format!("must be {API_VERSION}"),
        );
    }
    if top.get("kind").and_then(Value::as_str) != Some("ResourceSlice") {
        v.push("FieldValueInvalid", "kind", "must be ResourceSlice");
    }
    let meta_fields = [
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
        "selfLink",
    ];
    match top.get("metadata") {
        None => v.push(
            "FieldValueRequired",
            "metadata.name",
            "name or generateName is required",
        ),
        Some(m) => {
            if let Some(m) = v.object(m, "metadata", &meta_fields) {
                match v.string(m, "name", "metadata", false) {
                    Some(n) if !dns_subdomain(n) => v.push(
                        "FieldValueInvalid",
                        "metadata.name",
                        "must be a DNS subdomain",
                    ),
                    Some(_) => {}
                    None if m.get("generateName").is_none() => v.push(
                        "FieldValueRequired",
                        "metadata.name",
                        "name or generateName is required",
                    ),
                    None => {}
                }
                if m.get("namespace").is_some_and(|n| n.as_str() != Some("")) {
                    v.push(
                        "FieldValueForbidden",
                        "metadata.namespace",
                        "not allowed on this type",
                    );
                }
            }
        }
    }
    let Some(spec) = top.get("spec") else {
        v.push("FieldValueRequired", "spec", "Required value");
        return v.causes;
    };
    let Some(spec) = v.object(
        spec,
        "spec",
        &[
            "driver",
            "pool",
            "nodeName",
            "nodeSelector",
            "allNodes",
            "perDeviceNodeSelection",
            "devices",
            "sharedCounters",
        ],
    ) else {
        return v.causes;
    };
    if let Some(d) = v.string(spec, "driver", "spec", true)
        && (d.len() > 63 || !dns_subdomain(d))
    {
        v.push(
            "FieldValueInvalid",
            "spec.driver",
            "must be a DNS subdomain of at most 63 characters",
        );
    }
    match spec.get("pool") {
        None => v.push("FieldValueRequired", "spec.pool", "Required value"),
        Some(p) => {
            if let Some(p) = v.object(
                p,
                "spec.pool",
                &["name", "generation", "resourceSliceCount"],
            ) {
                if let Some(n) = v.string(p, "name", "spec.pool", true)
                    && (n.len() > 253 || !n.split('/').all(dns_subdomain))
                {
                    v.push(
                        "FieldValueInvalid",
                        "spec.pool.name",
                        "must be DNS subdomains separated by '/', at most 253 characters",
                    );
                }
                match p.get("generation").map(Value::as_i64) {
                    None => v.push(
                        "FieldValueRequired",
                        "spec.pool.generation",
                        "Required value",
                    ),
                    Some(Some(g)) if g >= 0 => {}
                    Some(_) => v.push(
                        "FieldValueInvalid",
                        "spec.pool.generation",
                        "must be an integer >= 0",
                    ),
                }
                match p.get("resourceSliceCount").map(Value::as_i64) {
                    None => v.push(
                        "FieldValueRequired",
                        "spec.pool.resourceSliceCount",
                        "Required value",
                    ),
                    Some(Some(c)) if c > 0 => {}
                    Some(_) => v.push(
                        "FieldValueInvalid",
                        "spec.pool.resourceSliceCount",
                        "must be greater than zero",
                    ),
                }
            }
        }
    }
    let node_name = v.string(spec, "nodeName", "spec", false);
    if let Some(n) = node_name
        && !dns_subdomain(n)
    {
        v.push(
            "FieldValueInvalid",
            "spec.nodeName",
            "must be a DNS subdomain",
        );
    }
    let set = [
        node_name.is_some_and(|n| !n.is_empty()),
        spec.get("nodeSelector").is_some_and(|x| !x.is_null()),
        spec.get("allNodes").and_then(Value::as_bool) == Some(true),
        spec.get("perDeviceNodeSelection").and_then(Value::as_bool) == Some(true),
    ];
    match set.iter().filter(|b| **b).count() {
        1 => {}
        0 => v.push("FieldValueRequired", "spec", "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"),
        _ => v.push("FieldValueInvalid", "spec", "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required, but multiple fields are set"),
    }
    if let Some(devs) = spec.get("devices").filter(|d| !d.is_null()) {
        let Some(devs) = devs.as_array() else {
            v.push("FieldValueTypeInvalid", "spec.devices", "must be a list");
            return v.causes;
        };
        if devs.len() > MAX_DEVICES {
            v.push(
                "FieldValueTooMany",
                "spec.devices",
                format!("must have at most {MAX_DEVICES} items, has {}", devs.len()),
            );
        }
        let mut names = BTreeSet::new();
        for (i, d) in devs.iter().enumerate() {
            let f = format!("spec.devices[{i}]");
            let Some(d) = v.object(d, &f, &DEVICE_FIELDS) else {
                continue;
            };
            if let Some(n) = v.string(d, "name", &f, true) {
                if !dns_label(n) {
                    v.push(
                        "FieldValueInvalid",
                        &format!("{f}.name"),
                        format!("{n:?}: must be a DNS label"),
                    );
                }
                if !names.insert(n.to_string()) {
                    v.push(
                        "FieldValueDuplicate",
                        &format!("{f}.name"),
                        format!("Duplicate value: {n:?}"),
                    );
                }
            }
            let mut total = 0;
            for key in ["attributes", "capacity"] {
                let Some(a) = d.get(key).filter(|a| !a.is_null()) else {
                    continue;
                };
                let Some(a) = a.as_object() else {
                    v.push(
                        "FieldValueTypeInvalid",
                        &format!("{f}.{key}"),
                        "must be a map",
                    );
                    continue;
                };
                total += a.len();
                for (name, val) in a {
                    let af = format!("{f}.{key}[{name}]");
                    qualified_name(&mut v, name, &af);
                    if key == "attributes" {
                        validate_attribute(&mut v, val, &af);
                    } else if v
                        .object(val, &af, &["value", "requestPolicy"])
                        .is_some_and(|c| c.get("value").is_none())
                    {
                        v.push(
                            "FieldValueRequired",
                            &format!("{af}.value"),
                            "Required value",
                        );
                    }
                }
            }
            if total > 32 {
                v.push("FieldValueTooMany", &f, format!("attributes and capacities must have at most 32 entries combined, has {total}"));
            }
        }
    }
    v.causes
}
