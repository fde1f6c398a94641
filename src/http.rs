//! The operator's HTTP endpoints: /metrics for Prometheus, /healthz and /readyz for the kubelet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::metrics::Metrics;

/// Shared by the endpoints and the controller.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the API server answered: before that the replica cannot do anything useful.
    pub ready: AtomicBool,
}

fn respond(health: &Health, path: &str) -> Response<Full<Bytes>> {
    let (code, ctype, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            health.metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ok\n".to_string())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "API server not reached yet\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(code)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

/// Serves until the process ends. Bind errors are returned so that a bad address fails fast.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let res = respond(&health, req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(res) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_answer_by_path_and_readiness() {
        let h = Health {
            metrics: Arc::new(Metrics::new()),
            ready: AtomicBool::new(false),
        };
        assert_eq!(respond(&h, "/healthz").status(), StatusCode::OK);
        assert_eq!(
            respond(&h, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&h, "/readyz").status(), StatusCode::OK);
        assert_eq!(respond(&h, "/metrics").status(), StatusCode::OK);
        assert_eq!(respond(&h, "/other").status(), StatusCode::NOT_FOUND);
    }
}
