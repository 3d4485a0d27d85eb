//! Placeholder until the runtime lands.
use super::*;
/// Placeholder.
pub struct NspawnRuntime;
impl NspawnRuntime { /// x
 pub fn new() -> Self { Self } }
#[async_trait::async_trait]
impl Runtime for NspawnRuntime {
    fn kind(&self) -> RuntimeKind { RuntimeKind::Nspawn }
    fn isolated(&self) -> bool { false }
    async fn launch(&self, _spec: &LaunchSpec) -> Result<Launched, RuntimeError> { Err(RuntimeError::Unavailable("not yet".into())) }
    async fn reap_orphans(&self, _name: &AgentName) -> Result<(), RuntimeError> { Ok(()) }
    async fn forget(&self, _spec: &LaunchSpec) -> Result<(), RuntimeError> { Ok(()) }
}
