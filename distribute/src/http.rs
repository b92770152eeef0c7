//! The small HTTP side of distribution: the origin's manifest, torrent and snapshot files, and
//! both processes' status and metrics. GET only; every answer is built in full before it is sent.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{DistributeError, Result};

pub type Reply = Response<Full<Bytes>>;

pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
}

pub fn not_found() -> Reply {
    json(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not found"}))
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| DistributeError::Config(format!("binding {addr}: {e}")))
}

/// Answers GET requests with `route(path)` until the task is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, route: F)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let route = Arc::new(route);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let route = route.clone();
                async move {
                    if request.method() != Method::GET {
                        return Ok::<_, Infallible>(json(
                            StatusCode::METHOD_NOT_ALLOWED,
                            &serde_json::json!({"error": "only GET"}),
                        ));
                    }
                    Ok(route(request.uri().path().to_owned()).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
