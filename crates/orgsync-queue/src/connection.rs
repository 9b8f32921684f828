//! `RedisConnection`: one cheap-to-clone connection to whichever Redis the queue uses
//! (a single server, a primary found through Sentinel, or a Redis Cluster), so the rest of
//! the crate sends commands, pipelines and scripts without knowing which.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use crate::config::{QueueConfig, RedisTopology};

/// The longest pause between two attempts to reach the primary during a failover.
const SENTINEL_MAX_PAUSE: Duration = Duration::from_millis(500);

/// A connection to the queue's Redis. Every clone shares the same underlying connection;
/// one pointer wide, so the many futures holding a clone stay small.
#[derive(Clone)]
pub(crate) struct RedisConnection(Arc<Kind>);

enum Kind {
    /// One server; `ConnectionManager` reconnects by itself.
    Standalone(ConnectionManager),
    /// The primary that the sentinels name, found again after a failover.
    Sentinel(SentinelConnection),
    /// A Redis Cluster. `anchor` is a key of this installation: commands without a key
    /// (`SCAN`) go to the node serving its slot, where every key of the installation lives.
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        anchor: Arc<str>,
    },
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match *self.0 {
            Kind::Standalone(_) => "RedisConnection::Standalone",
            Kind::Sentinel(_) => "RedisConnection::Sentinel",
            Kind::Cluster { .. } => "RedisConnection::Cluster",
        })
    }
}

impl RedisConnection {
    /// Opens the connection `config.topology` describes. `anchor` is any key of the
    /// installation (used to route keyless commands in a cluster).
    pub(crate) async fn open(config: &QueueConfig, anchor: String) -> RedisResult<Self> {
        Ok(Self(Arc::new(Kind::open(config, anchor).await?)))
    }
}

impl Kind {
    async fn open(config: &QueueConfig, anchor: String) -> RedisResult<Self> {
        let certificates = config.tls_ca_pem.as_ref().map(|ca| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        });
        match &config.topology {
            RedisTopology::Standalone => {
                let client = match certificates {
                    // rediss:// verified against the given CA rather than the system's trust store.
                    Some(certs) => redis::Client::build_with_tls(config.redis_url.as_str(), certs),
                    None => redis::Client::open(config.redis_url.as_str()),
                }?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Self::Standalone(
                    ConnectionManager::new_with_config(client, manager_config).await?,
                ))
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
            } => Ok(Self::Sentinel(
                SentinelConnection::open(config, sentinels, master_name, certificates).await?,
            )),
            RedisTopology::Cluster => {
                let mut builder =
                    redis::cluster::ClusterClient::builder(vec![config.redis_url.as_str()])
                        .connection_timeout(config.connect_timeout)
                        .response_timeout(config.response_timeout)
                        .retries(3);
                if let Some(certs) = certificates {
                    builder = builder.certs(certs);
                }
                let conn = builder.build()?.get_async_connection().await?;
                Ok(Self::Cluster {
                    conn,
                    anchor: anchor.into(),
                })
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &*self.0 {
            Kind::Standalone(conn) => {
                let mut conn = conn.clone();
                Box::pin(async move { conn.req_packed_command(cmd).await })
            }
            Kind::Sentinel(conn) => Box::pin(conn.command(cmd)),
            Kind::Cluster { conn, anchor } => {
                let mut conn = conn.clone();
                let keyless = cmd.args_iter().next().is_some_and(
                    |name| matches!(name, redis::Arg::Simple(n) if n.eq_ignore_ascii_case(b"SCAN")),
                );
                if keyless {
                    let route = Route::with_key(anchor.as_bytes(), SlotAddr::Master);
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    Box::pin(async move { conn.route_command(cmd.clone(), routing).await })
                } else {
                    Box::pin(async move { conn.req_packed_command(cmd).await })
                }
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &*self.0 {
            Kind::Standalone(conn) => {
                let mut conn = conn.clone();
                Box::pin(async move { conn.req_packed_commands(pipeline, offset, count).await })
            }
            Kind::Sentinel(conn) => Box::pin(conn.pipeline(pipeline, offset, count)),
            Kind::Cluster { conn, .. } => {
                let mut conn = conn.clone();
                Box::pin(async move { conn.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &*self.0 {
            Kind::Standalone(conn) => conn.get_db(),
            Kind::Sentinel(conn) => conn.db,
            Kind::Cluster { .. } => 0,
        }
    }
}

/// The primary of a Sentinel-managed group. Asks the sentinels for the primary, holds one
/// multiplexed connection to it, and drops that connection when it fails or the server
/// answers `READONLY` (it was demoted): the next command asks the sentinels again, so a
/// failover is followed without restarting the process.
#[derive(Clone)]
pub(crate) struct SentinelConnection {
    shared: Arc<SentinelShared>,
    db: i64,
}

struct SentinelShared {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The current primary's connection and a generation number, so one failed command
    /// does not throw away a connection that another one has already replaced.
    current: RwLock<Option<(u64, MultiplexedConnection)>>,
    generation: std::sync::atomic::AtomicU64,
    connection_config: AsyncConnectionConfig,
    /// How long a command that did not reach a primary keeps trying (the response timeout):
    /// a failover takes the sentinels a few seconds.
    patience: Duration,
}

impl SentinelConnection {
    async fn open(
        config: &QueueConfig,
        sentinels: &[String],
        master_name: &str,
        certificates: Option<TlsCertificates>,
    ) -> RedisResult<Self> {
        // The URL gives the primary's scheme (TLS or not), user, password and database.
        let info = config.redis_url.as_str().into_connection_info()?;
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        let settings = info.redis_settings();
        let mut addresses = Vec::with_capacity(sentinels.len());
        for sentinel in sentinels {
            addresses.push(sentinel_address(sentinel)?);
        }
        let mut builder =
            SentinelClientBuilder::new(addresses, master_name, SentinelServerType::Master)?
                .set_client_to_redis_db(settings.db());
        if tls {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        }
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(certs) = certificates {
            builder = builder.set_client_to_redis_certificates(certs);
        }
        let connection = Self {
            shared: Arc::new(SentinelShared {
                sentinel: tokio::sync::Mutex::new(builder.build()?),
                current: RwLock::new(None),
                generation: std::sync::atomic::AtomicU64::new(0),
                connection_config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout)),
                patience: config.response_timeout,
            }),
            db: settings.db(),
        };
        connection.connection().await?;
        Ok(connection)
    }

    /// The current primary's connection, asking the sentinels for it when there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut sentinel = self.shared.sentinel.lock().await;
        // Another command may have reconnected while this one waited for the lock.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let client = sentinel.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.shared.connection_config)
            .await?;
        let generation = self
            .shared
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some((generation, conn.clone()));
        tracing::info!("connected to the Redis primary the sentinels name");
        Ok((generation, conn))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets connection `generation` after `error`, when the error says the primary is
    /// gone or demoted. Returns whether the command surely did not run (so it may be sent
    /// again): a `READONLY` reply or a refused connection; a connection that broke while the
    /// command was under way may have run it, so that error goes to the caller.
    fn after_error(&self, generation: u64, error: &RedisError) -> bool {
        let demoted = error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        let gone = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout();
        if demoted || gone {
            let mut current = self
                .shared
                .current
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
                tracing::warn!(
                    "lost the Redis primary ({}); asking the sentinels again",
                    if demoted {
                        "it is now a replica"
                    } else {
                        "connection failed"
                    }
                );
            }
        }
        demoted || error.is_connection_refusal()
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let error = match self.connection().await {
                Ok((generation, mut conn)) => match conn.req_packed_command(cmd).await {
                    Ok(value) => return Ok(value),
                    Err(e) if self.after_error(generation, &e) => e,
                    Err(e) => return Err(e),
                },
                // The sentinels named no reachable primary (yet): nothing was sent.
                Err(e) => e,
            };
            pause = self.pause_or_give_up(started, pause, error).await?;
        }
    }

    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let error = match self.connection().await {
                Ok((generation, mut conn)) => {
                    match conn.req_packed_commands(pipeline, offset, count).await {
                        Ok(values) => return Ok(values),
                        Err(e) if self.after_error(generation, &e) => e,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => e,
            };
            pause = self.pause_or_give_up(started, pause, error).await?;
        }
    }

    /// After a command did not reach a primary: waits `pause` and returns the next pause,
    /// or gives `error` back once the patience is spent.
    async fn pause_or_give_up(
        &self,
        started: tokio::time::Instant,
        pause: Duration,
        error: RedisError,
    ) -> RedisResult<Duration> {
        if started.elapsed() + pause > self.shared.patience {
            return Err(error);
        }
        tracing::debug!("no Redis primary yet, trying again in {pause:?}: {error}");
        tokio::time::sleep(pause).await;
        Ok((pause * 2).min(SENTINEL_MAX_PAUSE))
    }
}

/// `host:port` of one sentinel.
fn sentinel_address(sentinel: &str) -> RedisResult<ConnectionAddr> {
    let invalid = || {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "sentinel address is not host:port",
            sentinel.to_owned(),
        ))
    };
    let (host, port) = sentinel.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse::<u16>().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(ConnectionAddr::Tcp(host.to_owned(), port))
}
