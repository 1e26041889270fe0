//! Rebinding a VF to its driver through sysfs, so the driver takes a new GUID (mlx5
//! reads the VF's GUIDs at probe time): `echo <pci> > /sys/bus/pci/drivers/<drv>/unbind`,
//! the same into `.../bind`, then wait, bounded, until a netdev shows up again under the
//! VF's `net/` directory. Everything under the configured sysfs root.
//!
//! The sysfs side sits behind [`DriverBinding`] so tests can drive a simulated host
//! (including a rebind that never brings the netdev back).

use rdma_hca::{Host, PciAddress};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long ADD waits for the VF netdev after a bind by default. mlx5 probes a VF in
/// about a second; this leaves room for a loaded node without hanging the runtime.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the VF's `net/` directory is listed while waiting.
pub const POLL: Duration = Duration::from_millis(20);

/// A failed rebind, naming the VF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebindError {
    /// Writing `unbind` or `bind` failed.
    #[error("rebind VF {vf}: cannot write {path}: {msg}")]
    Write {
        /// The VF.
        vf: String,
        /// The sysfs file.
        path: PathBuf,
        /// The I/O error.
        msg: String,
    },
    /// The VF has no driver to rebind to.
    #[error("rebind VF {vf}: it is bound to no driver")]
    NoDriver {
        /// The VF.
        vf: String,
    },
    /// Reading the VF's sysfs entries failed.
    #[error("rebind VF {vf}: {msg}")]
    Read {
        /// The VF.
        vf: String,
        /// What failed.
        msg: String,
    },
    /// The netdev did not come back.
    #[error("rebind VF {vf} to {driver}: no netdev under its net/ after {timeout:?}")]
    Timeout {
        /// The VF.
        vf: String,
        /// The driver it was bound to.
        driver: String,
        /// How long was waited.
        timeout: Duration,
    },
}

/// The sysfs operations a rebind needs.
pub trait DriverBinding {
    /// The VF's driver (`None`: unbound).
    fn driver(&mut self, vf: &PciAddress) -> Result<Option<String>, RebindError>;
    /// Unbind `vf` from `driver`.
    fn unbind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError>;
    /// Bind `vf` to `driver`.
    fn bind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError>;
    /// The netdevs under the VF's `net/` (empty while the driver probes).
    fn netdevs(&mut self, vf: &PciAddress) -> Result<Vec<String>, RebindError>;
}

/// The real [`DriverBinding`]: writes under `<root>/sys/bus/pci/drivers/`.
pub struct SysfsBinding {
    host: Host,
}

impl SysfsBinding {
    /// Over the host at `root` (`/` in production).
    pub fn new(root: impl Into<PathBuf>) -> SysfsBinding {
        SysfsBinding {
            host: Host::new(root),
        }
    }

    fn write(&self, vf: &PciAddress, driver: &str, file: &str) -> Result<(), RebindError> {
        let path = driver_file(self.host.root(), driver, file);
        // sysfs takes the whole address in one write; no newline needed
        std::fs::write(&path, vf.as_str()).map_err(|e| RebindError::Write {
            vf: vf.to_string(),
            path,
            msg: e.to_string(),
        })
    }
}

/// `<root>/sys/bus/pci/drivers/<driver>/<file>`.
pub fn driver_file(root: &Path, driver: &str, file: &str) -> PathBuf {
    root.join("sys/bus/pci/drivers").join(driver).join(file)
}

impl DriverBinding for SysfsBinding {
    fn driver(&mut self, vf: &PciAddress) -> Result<Option<String>, RebindError> {
        self.host
            .function(vf)
            .map(|f| f.driver)
            .map_err(|e| RebindError::Read {
                vf: vf.to_string(),
                msg: e.to_string(),
            })
    }

    fn unbind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError> {
        self.write(vf, driver, "unbind")
    }

    fn bind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError> {
        self.write(vf, driver, "bind")
    }

    fn netdevs(&mut self, vf: &PciAddress) -> Result<Vec<String>, RebindError> {
        self.host
            .function(vf)
            .map(|f| f.netdevs)
            .map_err(|e| RebindError::Read {
                vf: vf.to_string(),
                msg: e.to_string(),
            })
    }
}

/// Unbind `vf` from its driver, bind it back, and wait up to `timeout` for its netdev.
/// Returns the netdev's name (it may differ from the one before). On a timeout the VF
/// is left bound: the caller's rollback restores the GUIDs and rebinds again.
pub fn rebind(
    b: &mut dyn DriverBinding,
    vf: &PciAddress,
    timeout: Duration,
) -> Result<String, RebindError> {
    let driver = b
        .driver(vf)?
        .ok_or_else(|| RebindError::NoDriver { vf: vf.to_string() })?;
    b.unbind(vf, &driver)?;
    b.bind(vf, &driver)?;
    wait_netdev(b, vf, &driver, timeout)
}

/// Wait up to `timeout` for a netdev under `vf`'s `net/`.
pub fn wait_netdev(
    b: &mut dyn DriverBinding,
    vf: &PciAddress,
    driver: &str,
    timeout: Duration,
) -> Result<String, RebindError> {
    let start = Instant::now();
    loop {
        if let Some(n) = b.netdevs(vf)?.into_iter().next() {
            return Ok(n);
        }
        if start.elapsed() >= timeout {
            return Err(RebindError::Timeout {
                vf: vf.to_string(),
                driver: driver.to_string(),
                timeout,
            });
        }
        std::thread::sleep(POLL.min(timeout));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simhost::{Profile, SimHost};

    /// The simulated host as the kernel would behave: a write to `unbind` drops the
    /// VF's netdev, a write to `bind` brings it back unless `returns` is false.
    struct Sim<'a> {
        host: &'a SimHost,
        real: SysfsBinding,
        netdev: String,
        returns: bool,
        log: Vec<String>,
    }

    impl DriverBinding for Sim<'_> {
        fn driver(&mut self, vf: &PciAddress) -> Result<Option<String>, RebindError> {
            self.real.driver(vf)
        }
        fn unbind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError> {
            self.real.unbind(vf, driver)?;
            let written =
                std::fs::read_to_string(driver_file(self.host.root(), driver, "unbind")).unwrap();
            self.log.push(format!("unbind {driver} {written}"));
            self.host.unbind(vf.as_str()).unwrap();
            Ok(())
        }
        fn bind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError> {
            self.real.bind(vf, driver)?;
            let written =
                std::fs::read_to_string(driver_file(self.host.root(), driver, "bind")).unwrap();
            self.log.push(format!("bind {driver} {written}"));
            self.host.bind(vf.as_str(), driver).unwrap();
            if self.returns {
                self.host
                    .add_netdev(
                        vf.as_str(),
                        &self.netdev,
                        32,
                        true,
                        "80:00:00:00:fe:80:00:00:00:00:00:00:00:02:c9:03:00:21:6e:78",
                    )
                    .unwrap();
            }
            Ok(())
        }
        fn netdevs(&mut self, vf: &PciAddress) -> Result<Vec<String>, RebindError> {
            self.real.netdevs(vf)
        }
    }

    fn setup() -> (tempfile::TempDir, SimHost) {
        let d = tempfile::tempdir().unwrap();
        let h = SimHost::create(d.path(), Profile::Infiniband).unwrap();
        (d, h)
    }

    #[test]
    fn rebind_writes_unbind_then_bind_and_finds_the_netdev_again() {
        let (_d, h) = setup();
        let vf: PciAddress = h.vf_address(0, 1).parse().unwrap();
        let name = h.vf_netdev(0, 1);
        let mut sim = Sim {
            host: &h,
            real: SysfsBinding::new(h.root()),
            netdev: name.clone(),
            returns: true,
            log: vec![],
        };
        let got = rebind(&mut sim, &vf, Duration::from_secs(5)).unwrap();
        assert_eq!(got, name);
        assert_eq!(
            sim.log,
            vec![
                format!("unbind mlx5_core {vf}"),
                format!("bind mlx5_core {vf}")
            ]
        );
    }

    #[test]
    fn rebind_that_never_brings_the_netdev_back_times_out_naming_the_vf() {
        let (_d, h) = setup();
        let vf: PciAddress = h.vf_address(1, 2).parse().unwrap();
        let mut sim = Sim {
            host: &h,
            real: SysfsBinding::new(h.root()),
            netdev: h.vf_netdev(1, 2),
            returns: false,
            log: vec![],
        };
        let t = Duration::from_millis(60);
        let e = rebind(&mut sim, &vf, t).unwrap_err();
        assert_eq!(
            e,
            RebindError::Timeout {
                vf: vf.to_string(),
                driver: "mlx5_core".into(),
                timeout: t
            }
        );
        let msg = e.to_string();
        assert!(msg.contains(vf.as_str()) && msg.contains("60ms"), "{msg}");
        assert_eq!(sim.log.len(), 2);
    }

    #[test]
    fn unbound_vf_and_missing_driver_dir_are_named() {
        let (_d, h) = setup();
        let vf: PciAddress = h.vf_address(0, 0).parse().unwrap();
        h.unbind(vf.as_str()).unwrap();
        let mut real = SysfsBinding::new(h.root());
        let e = rebind(&mut real, &vf, Duration::from_millis(10)).unwrap_err();
        assert_eq!(e, RebindError::NoDriver { vf: vf.to_string() });
        let e = real.bind(&vf, "no_such_driver").unwrap_err();
        assert!(
            matches!(&e, RebindError::Write { path, .. } if path.ends_with("no_such_driver/bind")),
            "{e}"
        );
        assert!(e.to_string().contains(vf.as_str()), "{e}");
    }
}
