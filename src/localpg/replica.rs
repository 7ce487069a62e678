//! Streaming standbys of a [`LocalPostgres`] and their promotion, for failover tests.

use super::runas::run;
use super::{LocalPgError, LocalPostgres};

impl LocalPostgres {
    /// Makes a streaming standby of this server: `pg_basebackup -R -X stream` over TCP (the
    /// replication connection is trusted in `pg_hba.conf`) into a new directory, then starts it
    /// on a new port. Returns once the standby accepts read-only connections; it may still be
    /// catching up with the primary.
    pub fn start_standby(&self) -> Result<LocalPostgres, LocalPgError> {
        if !self.running {
            return Err(LocalPgError::NotRunning { port: self.port() });
        }
        let mut standby =
            LocalPostgres::allocate(self.bins.clone(), self.runner, self.opts.clone())?;
        let mut cmd = self
            .runner
            .command(&self.bins.tool("pg_basebackup"), &standby.root);
        cmd.arg("-D").arg(&standby.data_dir);
        // -R writes standby.signal and primary_conninfo (host, port, user of this connection);
        // -c fast: do not wait for a scheduled checkpoint; -w: never prompt for a password.
        cmd.args([
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            "-w",
            "-h",
            self.host(),
        ]);
        cmd.args(["-p", &self.port().to_string(), "-U", &self.opts.superuser]);
        run(&mut cmd)?;
        // The copied pg_hba.conf is already right; pgbaton.conf (port, socket dir) is rewritten
        // by the launch.
        standby.launch_on_free_port()?;
        tracing::info!(
            port = standby.port(),
            primary.port = self.port(),
            "localpg: standby started"
        );
        Ok(standby)
    }

    /// Promotes this standby to a primary (`pg_ctl promote -w`): returns once it accepts writes.
    pub fn promote(&self) -> Result<(), LocalPgError> {
        if !self.running {
            return Err(LocalPgError::NotRunning { port: self.port() });
        }
        run(&mut self.pg_ctl("promote"))?;
        tracing::info!(port = self.port(), "localpg: server promoted");
        Ok(())
    }
}
