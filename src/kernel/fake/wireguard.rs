//! An in-memory [`Tunnel`] for unit tests of the agent's mesh, without root or a TUN device:
//! it keeps the spec last applied (the device exists while it is set), counts the applies,
//! and shares both with the test through a [`FakeTunnelState`] handle. `fail` makes the next
//! apply fail, as a kernel refusing the device would.

use crate::kernel::wireguard::{Engine, Peer, Tunnel, TunnelSpec};
use crate::kernel::{Ctx, KernelError};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct FakeTunnelState {
    /// The device as last applied (None: there is no device).
    pub device: Option<TunnelSpec>,
    /// How many applies reached the device.
    pub applies: usize,
    /// Fail the next apply with this reason.
    pub fail: Option<String>,
}

pub struct FakeTunnel {
    engine: Engine,
    state: Arc<Mutex<FakeTunnelState>>,
}

impl FakeTunnel {
    pub fn new(engine: Engine) -> (FakeTunnel, Arc<Mutex<FakeTunnelState>>) {
        let state = Arc::new(Mutex::new(FakeTunnelState::default()));
        (
            FakeTunnel {
                engine,
                state: state.clone(),
            },
            state,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeTunnelState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tunnel for FakeTunnel {
    fn engine(&self) -> Engine {
        self.engine
    }

    fn apply(&mut self, spec: &TunnelSpec) -> Result<(), KernelError> {
        let mut state = self.lock();
        if let Some(reason) = state.fail.take() {
            return Err(KernelError::Invalid {
                subject: Box::new(Ctx {
                    op: "configure".into(),
                    object: format!("tunnel {}", spec.name),
                    netns: None,
                }),
                reason: reason.into(),
            });
        }
        let mut spec = spec.clone();
        spec.peers.sort();
        state.device = Some(spec);
        state.applies += 1;
        Ok(())
    }

    fn peers(&self) -> Result<Vec<Peer>, KernelError> {
        Ok(self
            .lock()
            .device
            .as_ref()
            .map(|d| d.peers.clone())
            .unwrap_or_default())
    }

    fn remove(&mut self) -> Result<(), KernelError> {
        self.lock().device = None;
        Ok(())
    }
}
