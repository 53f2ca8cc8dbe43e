//! `GET /metrics`: the process's Prometheus registry as text, on the control listeners and,
//! with `skiff serve --metrics ADDR`, on a listener of its own for scrapers (no token there:
//! it serves nothing but this page).

use axum::http::header;
use axum::response::IntoResponse;
use tokio::net::TcpListener;

/// Prometheus' text format as prometheus-client writes it (OpenMetrics, `# EOF` included).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) async fn render() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        crate::metrics::global().encode(),
    )
}

/// `/metrics` alone, on `listener`, until `shutdown` resolves; any other path is 404.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(render));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
