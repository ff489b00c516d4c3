//! The `x-metrics` listener: just enough HTTP/1.1 for a Prometheus scrape. `GET /metrics`
//! answers the project's figures in the text format, anything else 404; one request per
//! connection, each in its own task, so a slow scraper holds up nobody.

use super::stats::{prometheus, Collector};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is refused: a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, project: String, stats: Arc<Collector>) {
    let project: Arc<str> = project.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let (project, stats) = (project.clone(), stats.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(stream, &project, &stats)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, project: &str, stats: &Collector) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, kind, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            prometheus::CONTENT_TYPE,
            prometheus::render(project, &stats.sample().await),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try /metrics\n".to_string(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}
