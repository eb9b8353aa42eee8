// SPDX-License-Identifier: GPL-2.0
//! gRPC over unix sockets, as kubelet and its plugins speak it.

use std::{io, path::Path, time::Duration};
use tonic::transport::{Channel, Endpoint};

/// A channel to the gRPC server listening on `socket`. Every call on it gives up after
/// `deadline`, so a peer that accepts and then never answers cannot hang the caller.
pub async fn channel(socket: &Path, deadline: Duration) -> Result<Channel, String> {
    let path = socket.to_path_buf();
    // The URI is required but unused: the connector dials the socket.
    Endpoint::from_static("http://[::]:0")
        .connect_timeout(deadline)
        .timeout(deadline)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| format!("connect to {}: {}", socket.display(), error_chain(&e)))
}

/// An error and its sources, joined: tonic's top-level transport errors say little alone.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// A file's identity (device and inode): what changes when kubelet deletes a socket and makes
/// a new one at the same path. `None` while nothing is there.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}
