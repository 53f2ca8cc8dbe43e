//! Store data: what one instance's host side holds, and the outbound HTTP policy.

use super::WasmError;
use super::capabilities::Capabilities;
use super::engine::WasmEngine;
use super::limits::{Limits, StoreLimiter};
use super::outbound::OutboundPolicy;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Host state of a component instance: WASI 0.2, wasi:http, limits.
pub(crate) struct ComponentHost {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: OutboundPolicy,
    pub(crate) limiter: StoreLimiter,
}

/// Host state of a core module instance: WASI preview 1, limits.
pub(crate) struct ModuleHost {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: StoreLimiter,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Builds a store for one component instance with these grants and limits.
pub(crate) fn component_store(
    engine: &WasmEngine,
    caps: &Capabilities,
    limits: &Limits,
) -> Result<Store<ComponentHost>, WasmError> {
    let host = ComponentHost {
        wasi: caps.wasi_builder()?.build(),
        table: ResourceTable::new(),
        http: WasiHttpCtx::new(),
        outbound: caps.outbound.clone(),
        limiter: StoreLimiter::new(limits),
    };
    let mut store = Store::new(engine.engine(), host);
    store.limiter(|host| &mut host.limiter);
    arm_deadline(engine, &mut store, limits);
    Ok(store)
}

/// Builds a store for one core module instance with these grants and limits.
pub(crate) fn module_store(
    engine: &WasmEngine,
    wasi: WasiP1Ctx,
    limits: &Limits,
) -> Store<ModuleHost> {
    let host = ModuleHost {
        wasi,
        limiter: StoreLimiter::new(limits),
    };
    let mut store = Store::new(engine.engine(), host);
    store.limiter(|host| &mut host.limiter);
    arm_deadline(engine, &mut store, limits);
    store
}

/// Arms the time limit in epoch ticks, yielding to the async runtime at every tick: a guest
/// that spins never holds a runtime worker for more than one tick (on a 2-core node two
/// spinning guests would otherwise stall the whole gateway until their limits), and it traps
/// once its limit's ticks have passed (`Trap::Interrupt`, reported as a time-out). Without a
/// limit it only yields.
fn arm_deadline<T: 'static>(engine: &WasmEngine, store: &mut Store<T>, limits: &Limits) {
    let mut left = limits.timeout.map(|t| engine.ticks_for(t));
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| match &mut left {
        Some(0 | 1) => Err(wasmtime::Trap::Interrupt.into()),
        Some(ticks) => {
            *ticks -= 1;
            Ok(wasmtime::UpdateDeadline::Yield(1))
        }
        None => Ok(wasmtime::UpdateDeadline::Yield(1)),
    });
}
