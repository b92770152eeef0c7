//! Reading what a test shipped back from the stream, and asking who leads it.

use std::time::{Duration, Instant};

use adsnap_events::{Event, StreamPosition, StreamReader};
use async_nats::jetstream;

/// Every event in the stream, read message by message by sequence number, with the number of
/// messages. Retries while the cluster settles (a leader election after a node died).
pub async fn stream_events(urls: &[String], stream: &str) -> (Vec<Event<'static>>, u64) {
    let start = Instant::now();
    loop {
        match try_stream_events(urls, stream).await {
            Ok(found) => return found,
            Err(err) if start.elapsed() < Duration::from_secs(30) => {
                eprintln!("reading the stream failed, retrying: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("reading the stream: {err}"),
        }
    }
}

async fn try_stream_events(urls: &[String], stream: &str) -> Result<(Vec<Event<'static>>, u64), String> {
    let mut reader =
        StreamReader::open(urls, stream, StreamPosition::Start, false).await.map_err(|e| e.to_string())?;
    let (mut events, mut n_messages) = (Vec::new(), 0);
    while let Some(batch) = reader.next_batch().await {
        let batch = batch.map_err(|e| e.to_string())?;
        events.extend(batch.events.into_iter().map(|(_, e)| e));
        n_messages += 1;
    }
    Ok((events, n_messages))
}

/// The stream's current leader, by server name.
pub async fn stream_leader(urls: &[String], stream: &str) -> Option<String> {
    let client = async_nats::connect(urls.to_vec()).await.ok()?;
    let js = jetstream::new(client);
    let mut stream = js.get_stream(stream).await.ok()?;
    stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
}
