//! DEL: undo what the cache entry records.

use super::steps::journal_of;
use super::*;

impl Plugin<'_> {
    pub(super) fn del(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
        let cache = self.cache();
        let Some(entry) = cache.load(&env.container_id, &env.ifname)? else {
            // Nothing cached: ADD never finished (or DEL already ran). Release IPAM,
            // which is idempotent, and succeed.
            if let Some(ipam) = &conf.ipam
                && !env.path.is_empty()
                && ipam::find(&ipam.plugin, &env.path).is_some()
            {
                let call = ipam::Call {
                    command: Command::Del,
                    env,
                };
                ipam::exec(&ipam.plugin, &call, &conf.raw)?;
            }
            return Ok(());
        };
        self.release(env, &entry, &conf.raw)
    }

    /// DEL one cached attachment (also used by GC).
    pub(super) fn release(
        &mut self,
        env: &Env,
        entry: &CacheEntry,
        conf_raw: &Value,
    ) -> Result<()> {
        let cache = self.cache();
        let lock = VfLock::acquire(&self.data_dir, &entry.device_id)?;
        let owner = lock.owner()?;
        let mine = owner
            .as_ref()
            .is_none_or(|o| o.container_id == entry.container_id && o.ifname == entry.ifname);
        let home = Netns::current().map_err(|e| Error::Other(e.to_string()))?;
        let netns = env.netns.as_ref().and_then(|p| Netns::open(p).ok());
        if !mine {
            crate::info!(
                "VF {} now belongs to {:?}; releasing only IPAM for {}/{}",
                entry.device_id,
                owner,
                entry.container_id,
                entry.ifname
            );
        }
        let journal = journal_of(entry, mine);
        let errs = self.undo(entry, &journal, netns.as_ref(), &home, env, conf_raw);
        if !errs.is_empty() {
            return Err(Error::Many(errs));
        }
        cache.remove(&entry.container_id, &entry.ifname)?;
        if mine {
            lock.set_owner(None)?;
        }
        Ok(())
    }
}
