//! Command-line definitions (clap). `main.rs` turns them into a run.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pgbaton",
    version,
    about = "PostgreSQL proxy that moves live sessions between servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Validate a configuration file and print what it configures.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Start two throwaway local Postgres servers and a proxy in front of them.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:6432).
    #[arg(long)]
    pub listen: Option<String>,
    /// A backend as NAME=HOST:PORT; repeat for more. The first is the default.
    #[arg(long = "backend", value_name = "NAME=HOST:PORT")]
    pub backends: Vec<String>,
    /// Client authentication: trust or scram-sha-256 (the default).
    #[arg(long, value_parser = ["trust", "scram-sha-256"])]
    pub auth: Option<String>,
    /// A user allowed on the admin console; repeat for more.
    #[arg(long = "admin-user", value_name = "NAME")]
    pub admin_users: Vec<String>,
    /// PEM certificate for TLS towards clients.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// PEM private key for TLS towards clients.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// The replicas' coordination store: memory (the default: one replica),
    /// postgres://USER@HOST:PORT/DB or etcd://HOST:PORT[,HOST:PORT].
    #[arg(long, value_name = "URL")]
    pub cluster_store: Option<String>,
    /// This replica's name in the fleet (default: hostname-port).
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address for the demo proxy.
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub listen: String,
    /// Run this many pgbaton replicas (processes) on consecutive ports,
    /// sharing a coordination store in the demo's first server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub replicas: u16,
}

impl ServeArgs {
    pub fn overrides(&self) -> crate::config::Overrides {
        crate::config::Overrides {
            listen: self.listen.clone(),
            backends: self.backends.clone(),
            auth: self.auth.clone(),
            admin_users: self.admin_users.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            cluster_store: self.cluster_store.clone(),
            node_id: self.node_id.clone(),
        }
    }
}
