//! The floor of Sallyport's stack, for the load benchmark: a reverse proxy with nothing but
//! hyper's HTTP/1 server and the same pooled hyper-util client Sallyport uses — no routing, no
//! session, no header rewriting, no logging. `bench/run` measures it beside Sallyport and
//! nginx, so the table shows how much of the gap to nginx is the stack and how much is
//! Sallyport's own work.
//!
//! `cargo run --release --example bare_proxy -- 127.0.0.1:18006 http://127.0.0.1:18001`

use std::convert::Infallible;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("usage: bare_proxy LISTEN UPSTREAM_URL");
    let upstream = args.next().expect("usage: bare_proxy LISTEN UPSTREAM_URL");
    // The same runtime choice as Sallyport's: one thread on one CPU.
    sallyport::runtime()
        .expect("a tokio runtime")
        .block_on(serve(listen, upstream));
}

async fn serve(listen: String, upstream: String) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector);
    let listener = TcpListener::bind(&listen).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let uri = format!(
                    "{upstream}{}",
                    req.uri().path_and_query().map_or("/", |p| p.as_str())
                );
                async move {
                    *req.uri_mut() = uri.parse().expect("a valid upstream URI");
                    req.headers_mut().remove(hyper::header::HOST);
                    Ok::<_, Infallible>(match client.request(req).await {
                        Ok(resp) => resp.map(http_body_util::Either::Left),
                        Err(_) => Response::builder()
                            .status(502)
                            .body(http_body_util::Either::Right(http_body_util::Empty::new()))
                            .expect("a static response"),
                    })
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
