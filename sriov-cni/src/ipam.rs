//! Delegation to the IPAM plugin named in `ipam.type`, found in `CNI_PATH` and executed
//! as the spec says: same environment (with `CNI_COMMAND` set), the network
//! configuration on stdin, a result or error JSON on stdout.
//!
//! An IPAM plugin that does not know the requested spec version (Debian's host-local
//! 1.1.1 stops at 1.0.0) answers code 1; then we ask it for VERSION and rerun with the
//! newest version both sides support, converting its result back.

use crate::config::{Command, Env};
use crate::error::{Error, Result};
use crate::result::CniResult;
use crate::version::cmp_version_str;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Find `plugin` in the `CNI_PATH` directories.
pub fn find(plugin: &str, path: &[PathBuf]) -> Option<PathBuf> {
    path.iter()
        .map(|d| d.join(plugin))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The identity of the attachment IPAM works for.
pub struct Call<'a> {
    /// The command.
    pub command: Command,
    /// The environment (container ID, ifname, netns, path, args).
    pub env: &'a Env,
}

fn exec_once(bin: &Path, call: &Call<'_>, stdin: &[u8]) -> Result<(bool, Vec<u8>)> {
    let e = call.env;
    let mut cmd = std::process::Command::new(bin);
    cmd.env("CNI_COMMAND", call.command.as_str())
        .env("CNI_CONTAINERID", &e.container_id)
        .env("CNI_IFNAME", &e.ifname)
        .env(
            "CNI_NETNS",
            e.netns
                .as_deref()
                .map(|p| p.as_os_str().to_owned())
                .unwrap_or_default(),
        )
        .env(
            "CNI_PATH",
            std::env::join_paths(&e.path).unwrap_or_default(),
        )
        .env(
            "CNI_ARGS",
            e.args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|err| Error::io("execute IPAM plugin", bin, err))?;
    if let Some(mut si) = child.stdin.take() {
        // A plugin may exit (with an error JSON) before reading all of stdin.
        match si.write_all(stdin) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io("write stdin of", bin, err));
            }
            _ => {}
        }
    }
    // Bounded wait: a hung IPAM plugin must not hold the VF lock forever.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(IPAM_TIMEOUT) {
        Ok(r) => r.map_err(|err| Error::io("wait for", bin, err))?,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return Err(Error::Ipam {
                plugin: bin.display().to_string(),
                msg: format!("no answer within {} s; killed", IPAM_TIMEOUT.as_secs()),
            });
        }
    };
    Ok((out.status.success(), out.stdout))
}

/// How long an IPAM plugin may take.
pub const IPAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn plugin_error(plugin: &str, stdout: &[u8]) -> (Option<u64>, Error) {
    let v: Option<Value> = serde_json::from_slice(stdout).ok();
    let code = v
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_u64);
    let msg = v
        .as_ref()
        .map(|v| {
            let m = v.get("msg").and_then(Value::as_str).unwrap_or("");
            let d = v.get("details").and_then(Value::as_str).unwrap_or("");
            if d.is_empty() {
                m.to_string()
            } else {
                format!("{m}: {d}")
            }
        })
        .unwrap_or_else(|| String::from_utf8_lossy(stdout).trim().to_string());
    (
        code,
        Error::Ipam {
            plugin: plugin.to_string(),
            msg: if msg.is_empty() {
                "failed with no output".into()
            } else {
                msg
            },
        },
    )
}

/// The spec versions the plugin says it supports (its VERSION answer; none if it fails).
fn supported_versions(bin: &Path, env: &Env, stdin: &[u8]) -> Result<Vec<String>> {
    let ver = Call {
        command: Command::Version,
        env,
    };
    let (ok, out) = exec_once(bin, &ver, stdin)?;
    Ok(serde_json::from_slice::<Value>(&out)
        .ok()
        .filter(|_| ok)
        .and_then(|v| v.get("supportedVersions").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

/// Forward GC to the IPAM plugin with the same network config (and so the same
/// `cni.dev/valid-attachments`), as the spec requires of plugins that delegate. A plugin
/// whose VERSION lists nothing from 1.1.0 on predates GC (Debian's host-local 1.1.1):
/// nothing to forward, `Ok(false)`; the stale attachments we knew of were released one by
/// one with DEL already.
pub fn gc(plugin: &str, env: &Env, conf: &Value) -> Result<bool> {
    let bin = find(plugin, &env.path).ok_or_else(|| Error::Ipam {
        plugin: plugin.to_string(),
        msg: format!("not found in CNI_PATH {:?}", env.path),
    })?;
    let stdin = serde_json::to_vec(conf).map_err(|e| Error::Other(e.to_string()))?;
    let supported = supported_versions(&bin, env, &stdin)?;
    if !supported
        .iter()
        .any(|v| cmp_version_str(v, "1.1.0").is_ge())
    {
        return Ok(false);
    }
    let call = Call {
        command: Command::Gc,
        env,
    };
    let (ok, out) = exec_once(&bin, &call, &stdin)?;
    if !ok {
        return Err(plugin_error(plugin, &out).1);
    }
    Ok(true)
}

/// Run the IPAM plugin. Returns its result for ADD, `None` for DEL/CHECK.
pub fn exec(plugin: &str, call: &Call<'_>, conf: &Value) -> Result<Option<CniResult>> {
    let bin = find(plugin, &call.env.path).ok_or_else(|| Error::Ipam {
        plugin: plugin.to_string(),
        msg: format!("not found in CNI_PATH {:?}", call.env.path),
    })?;
    let stdin = serde_json::to_vec(conf).map_err(|e| Error::Other(e.to_string()))?;
    let (ok, out) = exec_once(&bin, call, &stdin)?;
    let (ok, out) = if ok {
        (ok, out)
    } else {
        let (code, err) = plugin_error(plugin, &out);
        if code != Some(1) {
            return Err(err);
        }
        // Incompatible version: retry with the newest version the plugin supports.
        let ours = conf.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        let supported = supported_versions(&bin, call.env, &stdin)?;
        let best = supported
            .iter()
            .filter(|s| {
                cmp_version_str(s, ours).is_le()
                    && s.as_str().parse::<crate::version::CniVersion>().is_ok()
            })
            .max_by(|a, b| cmp_version_str(a, b))
            .ok_or(err)?;
        let mut conf2 = conf.clone();
        conf2["cniVersion"] = Value::String(best.clone());
        if let Some(o) = conf2.as_object_mut() {
            o.remove("prevResult");
        }
        let stdin2 = serde_json::to_vec(&conf2).map_err(|e| Error::Other(e.to_string()))?;
        crate::debug!("IPAM {plugin} does not speak {ours}; using {best}");
        exec_once(&bin, call, &stdin2)?
    };
    if !ok {
        return Err(plugin_error(plugin, &out).1);
    }
    if call.command != Command::Add {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out).map_err(|e| Error::Ipam {
        plugin: plugin.to_string(),
        msg: format!("result is not JSON: {e}"),
    })?;
    CniResult::parse(&v).map(Some).map_err(|e| Error::Ipam {
        plugin: plugin.to_string(),
        msg: format!("bad result: {e}"),
    })
}
