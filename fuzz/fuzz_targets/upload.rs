#![no_main]
//! Sends arbitrary requests to the upload route of the real API router, in process, over a
//! store in a temporary directory: the first bytes pick the headers (content type, boundary,
//! auth), the rest is the multipart body. Must never panic; every answer is 200 or the error
//! envelope; a refused upload stores nothing (no new add-on, `staging/` empty).

use std::sync::{Arc, OnceLock};

use addonfs::addon::Store;
use addonfs::api::{self, ApiKeys, ApiLimits};
use addonfs::archive::ScanOptions;
use addonfs::Limits;
use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const KEY: &str = "fuzz-key";

struct World {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    router: axum::Router,
    runtime: tokio::runtime::Runtime,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), "fuzz").expect("store"));
        let limits = ApiLimits {
            max_upload: 256 << 10,
            scan: ScanOptions {
                span: 64 << 10,
                limits: Limits {
                    max_uncompressed: 4 << 20,
                    max_entries: 256,
                    max_header_bytes: 8192,
                    max_path_len: 1024,
                },
            },
            ..ApiLimits::default()
        };
        let keys = ApiKeys::new([KEY.to_string()]);
        let router = api::router(Arc::clone(&store), keys, limits, api::Observed::default());
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        World { _dir: dir, store, router, runtime }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let (head, body) = data.split_at(data.len().min(2));
    let pick = head.first().copied().unwrap_or(0);
    let content_type = match pick % 6 {
        0 => "multipart/form-data; boundary=b".to_string(),
        1 => "multipart/form-data; boundary=\"b\"".to_string(),
        2 => "multipart/form-data".to_string(),
        3 => "application/json".to_string(),
        4 => "multipart/form-data; boundary=".to_string(),
        _ => format!(
            "multipart/form-data; boundary={}",
            String::from_utf8_lossy(body.get(..8).unwrap_or(body))
        ),
    };
    let auth = match head.get(1).copied().unwrap_or(0) % 8 {
        0 => None,
        1 => Some("Bearer wrong".to_string()),
        _ => Some(format!("Bearer {KEY}")),
    };
    let mut request = Request::post(api::UPLOAD_PATH);
    if let Ok(value) = axum::http::HeaderValue::from_str(&content_type) {
        request = request.header("content-type", value);
    }
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let request = request.body(Body::from(body.to_vec())).expect("request");
    let before = w.store.list().len();
    let response = w.runtime.block_on(w.router.clone().oneshot(request)).expect("infallible");
    let status = response.status();
    let bytes = w
        .runtime
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .expect("response body");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON answer");
    let after = w.store.list().len();
    if status == 200 {
        assert_eq!(after, before + 1, "200 stores one add-on");
        assert!(json["identifier"].as_str().is_some_and(|i| i.starts_with("custom-addon-")));
    } else {
        let code = json["code"].as_i64().expect("an error envelope");
        assert!(code > 0, "{json}");
        assert_eq!(json["error"], json["message"]);
        assert_eq!(after, before, "a refused upload stores nothing: {json}");
    }
    assert_eq!(w.store.staging_count(), 0, "staging/ is emptied after every upload");
});
