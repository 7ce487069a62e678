//! The TOML file as written by users. Unknown keys are errors
//! (`deny_unknown_fields`), so a typo never silently does nothing.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub max_clients: Option<usize>,
    pub max_startup_clients: Option<usize>,
    pub admin_reserved_clients: Option<usize>,
    pub auth: Option<String>,
    pub admin_users: Option<Vec<String>>,
    pub shutdown_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_message_size: Option<usize>,
    pub max_client_memory: Option<usize>,
    pub log_format: Option<String>,
    pub migration_wait: Option<String>,
    pub cutover_budget: Option<String>,
    pub drain_on_timeout: Option<String>,
    pub scale_out_hook: Option<String>,
    pub threads: Option<usize>,
    pub busy_poll: Option<String>,
    pub tls: Option<RawTls>,
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default)]
    pub users: Vec<RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub store: Option<String>,
    pub node_id: Option<String>,
    pub advertise_client: Option<String>,
    pub advertise_admin: Option<String>,
    pub lease_ttl: Option<String>,
    pub start_without_store: Option<bool>,
    pub history: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub ca_file: Option<String>,
    pub foreign: Option<bool>,
    pub draining: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    pub password: Option<String>,
    pub scram_secret: Option<String>,
    pub server_password: Option<String>,
}

pub fn parse(text: &str) -> Result<RawConfig, super::ConfigError> {
    toml::from_str(text).map_err(|e| super::ConfigError::Toml(e.to_string()))
}
