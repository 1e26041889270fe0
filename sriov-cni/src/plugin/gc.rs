//! GC: release cached attachments the runtime no longer lists.

use super::*;

impl Plugin<'_> {
    pub(super) fn gc(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
        let valid = conf.valid_attachments.clone().ok_or_else(|| {
            Error::Config(crate::config::ConfigError {
                field: "cni.dev/valid-attachments".into(),
                value: "<missing>".into(),
                reason: "GC needs the list of attachments to keep".into(),
            })
        })?;
        let mut errs = Vec::new();
        for item in self.cache().list()? {
            let entry = match item {
                Ok(e) => e,
                Err(x) => {
                    errs.push(x);
                    continue;
                }
            };
            if entry.net_name != conf.name
                || valid
                    .iter()
                    .any(|a| a.container_id == entry.container_id && a.ifname == entry.ifname)
            {
                continue;
            }
            crate::info!(
                "GC: releasing stale attachment {}/{}",
                entry.container_id,
                entry.ifname
            );
            let stale_env = Env {
                command: Command::Del,
                container_id: entry.container_id.clone(),
                ifname: entry.ifname.clone(),
                netns: entry.netns.as_ref().map(PathBuf::from),
                path: env.path.clone(),
                args: Vec::new(),
            };
            let cfg = entry.config.clone();
            if let Err(x) = self.release(&stale_env, &entry, &cfg) {
                errs.push(x);
            }
        }
        // The spec: GC goes on to the delegated IPAM plugin, with the same config.
        if let Some(ipam) = &conf.ipam {
            match ipam::gc(&ipam.plugin, env, &conf.raw) {
                Ok(true) => crate::info!("GC forwarded to IPAM {}", ipam.plugin),
                Ok(false) => crate::debug!(
                    "IPAM {} predates GC (no spec version from 1.1.0 on): not forwarded",
                    ipam.plugin
                ),
                Err(x) => errs.push(x),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::Many(errs))
        }
    }
}
