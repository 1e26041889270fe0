//! The commands: ADD, DEL, CHECK, STATUS, GC (VERSION is answered by the dispatcher).
//!
//! ADD ([`add`](self)) reads and plans, records the cache entry before the first change,
//! then runs the ordered [`steps`](self): VF settings on the PF but the MAC, InfiniBand
//! GUIDs and rebind, RDMA device move, link move+rename+MAC+MTU (one message), the admin
//! MAC on the PF, IPAM, addresses, link up, routes. A failed ADD and DEL share one undo
//! loop: ADD's over the steps that ran, DEL's over every step the cache entry plans.

mod add;
mod check;
mod del;
mod gc;
mod steps;

use crate::cache::{Cache, CacheEntry, HostLink, IbEntry};
use crate::config::{Command, Env, EnvError, Mac, NetConf};
use crate::error::{Error, Result};
use crate::ib::conf::IbConf;
use crate::ib::netlink::GuidKind;
use crate::ipam;
use crate::links::{LinkHandle, Links};
use crate::lock::{Owner, VfLock};
use crate::netlink::{LinkChange, RouteSpec};
use crate::netns::Netns;
use crate::result::{CniResult, Interface, IpConfig};
use crate::sriov::{TestSeam, VfConfigurator, VfSetting, VfState};
use crate::vf::{self, VfTarget};
use rdma_hca::{Host, PciAddress, RdmaNetnsMode};
use serde_json::Value;
use std::path::PathBuf;

/// What a command runs against.
pub struct Plugin<'a> {
    /// The host tree sysfs is read from (`/`, or a fixture root in tests).
    pub host: Host,
    /// VF configuration on the PF (netlink, or the test fake).
    pub vf: &'a mut dyn VfConfigurator,
    /// Fault injection and the VF driver model: [`NoSeam`](crate::sriov::NoSeam) in the
    /// shipped binary.
    pub seam: &'a mut dyn TestSeam,
    /// Links, addresses and routes per netns (route netlink, or the test double).
    pub links: &'a mut dyn Links,
    /// The data directory (cache files, `lock/`).
    pub data_dir: PathBuf,
}

fn netns_env_err(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Env(EnvError {
        var: "CNI_NETNS",
        value: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Whether the VF netdev is still on the host under its name and index.
fn rtnl_link_is(rtnl: &mut dyn LinkHandle, l: &HostLink) -> Result<bool> {
    Ok(rtnl
        .link_by_index(l.index)?
        .is_some_and(|h| h.name == l.name))
}

/// The VF settings a config asks for, in the order they are applied, leaving out those
/// the VF already has (and had before any earlier attachment).
pub fn planned_settings(conf: &NetConf, current: &VfState, orig: &VfState) -> Vec<VfSetting> {
    let mut v = Vec::new();
    if let Some(vlan) = conf.vlan {
        v.push(VfSetting::Vlan {
            vlan,
            qos: conf.vlan_qos.unwrap_or(0),
            proto: conf.vlan_proto.unwrap_or(crate::config::VlanProto::Dot1Q),
        });
    }
    if let Some(mac) = conf.mac {
        v.push(VfSetting::Mac { mac });
    }
    if conf.min_tx_rate.is_some() || conf.max_tx_rate.is_some() {
        v.push(VfSetting::Rate {
            min: conf.min_tx_rate.unwrap_or(current.min_tx_rate),
            max: conf.max_tx_rate.unwrap_or(current.max_tx_rate),
        });
    }
    if let Some(s) = conf.spoofchk {
        v.push(VfSetting::Spoofchk { on: s.enabled() });
    }
    if let Some(t) = conf.trust {
        v.push(VfSetting::Trust { on: t.enabled() });
    }
    if let Some(l) = conf.link_state {
        v.push(VfSetting::LinkState { state: l });
    }
    v.retain(|s| !(s.holds_in(current) && s.holds_in(orig)));
    v
}

impl Plugin<'_> {
    fn cache(&self) -> Cache {
        Cache::new(&self.data_dir)
    }

    /// Run one command (not VERSION). Returns the JSON to print, if any.
    pub fn run(&mut self, env: &Env, conf: &NetConf) -> Result<Option<Value>> {
        match env.command {
            Command::Add => self.add(env, conf).map(Some),
            Command::Del => self.del(env, conf).map(|_| None),
            Command::Check => self.check(env, conf).map(|_| None),
            Command::Status => self.status(env, conf).map(|_| None),
            Command::Gc => self.gc(env, conf).map(|_| None),
            Command::Version => Ok(Some(crate::version::version_json(Some(
                conf.cni_version.as_str(),
            )))),
        }
    }

    fn ipam_plugin(&self, env: &Env, conf: &NetConf) -> Result<Option<String>> {
        let Some(ipam) = &conf.ipam else {
            return Ok(None);
        };
        if env.path.is_empty() {
            return Err(Error::Env(EnvError {
                var: "CNI_PATH",
                value: String::new(),
                reason: format!(
                    "missing, and ipam.type {:?} must be looked up in it",
                    ipam.plugin
                ),
            }));
        }
        if ipam::find(&ipam.plugin, &env.path).is_none() {
            return Err(Error::Config(crate::config::ConfigError {
                field: "ipam.type".into(),
                value: format!("\"{}\"", ipam.plugin),
                reason: format!("no executable of that name in CNI_PATH {:?}", env.path),
            }));
        }
        Ok(Some(ipam.plugin.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> NetConf {
        let s = format!(r#"{{"cniVersion":"1.0.0","name":"n","deviceID":"0000:3b:00.2"{extra}}}"#);
        NetConf::parse(s.as_bytes(), true).unwrap()
    }

    #[test]
    fn planned_settings_skip_what_already_holds() {
        let cur = VfState::default();
        let c = conf(r#","vlan":0,"spoofchk":"on","trust":"on","max_tx_rate":100"#);
        // vlan 0 and spoofchk on are already so: only trust and rate are planned.
        let p = planned_settings(&c, &cur, &cur);
        assert_eq!(
            p,
            vec![
                VfSetting::Rate { min: 0, max: 100 },
                VfSetting::Trust { on: true }
            ]
        );
        // ...unless an earlier attachment left the VF differently from its baseline.
        let mut orig = cur.clone();
        orig.vlan = 7;
        let p = planned_settings(&c, &cur, &orig);
        assert_eq!(p[0].name(), "vlan");
        // No settings in the config: nothing touches the PF.
        assert!(planned_settings(&conf(""), &cur, &cur).is_empty());
    }
}
