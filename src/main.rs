//! The `pgbaton` binary: parse arguments, set up tracing, run.

use anyhow::Context;
use clap::Parser;
use pgbaton::cli::{Cli, Command};
use pgbaton::config::{Config, LogFormat};
use pgbaton::net::busy_poll::BusyPoll;
use pgbaton::proxy::Proxy;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written (stderr closed: the reader of a
    // pipe gone) is dropped; the default would report it with eprintln!,
    // whose panic aborts a shutdown in progress.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime(
    threads: usize,
    busy_poll: Duration,
) -> anyhow::Result<(tokio::runtime::Runtime, BusyPoll)> {
    pgbaton::proxy::runtime::build(threads, busy_poll).context("cannot start the tokio runtime")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let c = Config::load(Some(&config), &Default::default())
                .with_context(|| format!("{} is not valid", config.display()))?;
            pgbaton::say!("{}: ok", config.display());
            pgbaton::say!(
                "listen {} (auth {}, max_clients {})",
                c.listen,
                c.auth.as_str(),
                c.max_clients
            );
            for (i, b) in c.backends.iter().enumerate() {
                let default = if i == 0 { " (default)" } else { "" };
                pgbaton::say!(
                    "backend {} at {} tls {:?}{default}",
                    b.name,
                    b.addr(),
                    b.tls
                );
            }
            pgbaton::say!(
                "cluster store {}, node id {}, lease_ttl {:?}",
                c.cluster.store,
                c.cluster.node_id_or_default(c.listen),
                c.cluster.lease_ttl
            );
            pgbaton::say!(
                "{} user(s), {} admin user(s)",
                c.users.len(),
                c.admin_users.len()
            );
            Ok(())
        }
        Command::Serve(args) => {
            let overrides = args.overrides();
            let config = Config::load(args.config.as_deref(), &overrides)?;
            init_tracing(config.log_format);
            let source = args.config.clone().map(|p| (p, overrides));
            let (runtime, poll) = runtime(config.threads, config.busy_poll)?;
            runtime.block_on(serve(config, source, poll))
        }
        Command::Demo(args) => {
            init_tracing(LogFormat::Text);
            let (runtime, _) = runtime(2, Duration::ZERO)?;
            runtime
                .block_on(pgbaton::demo::run(&args.listen, args.replicas))
                .map_err(Into::into)
        }
    }
}

async fn serve(
    config: Config,
    source: Option<(std::path::PathBuf, pgbaton::config::Overrides)>,
    poll: BusyPoll,
) -> anyhow::Result<()> {
    let proxy = Proxy::bind(config, pgbaton::admin::console, poll).await?;
    if let Some((path, overrides)) = source {
        proxy.shared().set_source(path, overrides);
    }
    let handle = proxy.handle();
    let reload = proxy.handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        handle.shutdown();
    });
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match reload.reload().await {
                Ok(done) => {
                    tracing::info!(plan = ?done.plan, draining = ?done.drained, "configuration reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the old configuration")
                }
            }
        }
    });
    proxy.run().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
