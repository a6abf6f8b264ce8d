//! Handing an upgraded client connection (WebSocket or SPDY) to another HTTP server: the request
//! goes upstream with its upgrade headers; a 101 answer is passed back and the two connections
//! are spliced byte for byte; any other answer is returned as it is.

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::server::Body;

pub async fn proxy_upgrade<S>(
    mut req: Request<Incoming>,
    io: std::io::Result<S>,
    path: &str,
) -> Result<Response<Body>, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = io.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut up = Request::builder().method(req.method().clone()).uri(path);
    for (k, v) in req.headers() {
        if k != header::HOST && k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING {
            up = up.header(k, v);
        }
    }
    let up = up.header(header::HOST, "localhost").body(Empty::new()).map_err(|e| e.to_string())?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = sender.send_request(up).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else { return };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        return out.body(crate::server::empty()).map_err(|e| e.to_string());
    }
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    out.body(Full::new(body).map_err(|e| match e {}).boxed_unsync()).map_err(|e| e.to_string())
}
