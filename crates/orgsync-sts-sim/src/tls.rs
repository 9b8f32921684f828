//! HTTPS with mutual TLS for the simulator: the server presents the PKI's `localhost` certificate and accepts only clients whose certificate the simulator CA issued.
//!
//! Handshakes run in their own tasks, so a slow or failing client does not hold up others;
//! finished connections are handed to axum through the [`axum::serve::Listener`] trait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::SimError;
use crate::pki::SimPki;

/// The rustls server configuration: server certificate, client certificates required from the CA.
pub(crate) fn server_config(pki: &SimPki) -> Result<rustls::ServerConfig, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.clone()))
        .map_err(|e| SimError::Usage(format!("the simulator CA: {e}")))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| SimError::Usage(format!("client certificate verifier: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(pki.tls.key_pem.as_bytes())
        .map_err(|e| SimError::Usage(format!("TLS key: {e}")))?;
    let chain = vec![
        CertificateDer::from(pki.tls.certificate.clone()),
        CertificateDer::from(pki.ca.clone()),
    ];
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Usage(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| SimError::Usage(format!("TLS certificate: {e}")))
}

/// Accepts TCP connections and completes TLS handshakes in the background.
pub(crate) struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    address: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        config: rustls::ServerConfig,
    ) -> std::io::Result<TlsListener> {
        let address = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::info!(peer = %peer, error = %error, "TLS handshake refused");
                        }
                        Err(_) => tracing::info!(peer = %peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            connections: rx,
            address,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop ended (cannot happen while the listener lives): wait forever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}
