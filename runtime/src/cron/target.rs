//! [`CronHandler`]: how the scheduler invokes a cron's target (the daemon wires agents and
//! workflows behind it), and [`cron_handler_fn`], a handler made from an async function.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use troupe_config::CronTarget;

use super::CronFireError;

/// Invokes a cron's target. The daemon wires agents and workflows behind it.
#[async_trait]
pub trait CronHandler: Send + Sync + 'static {
    /// Runs `target` with `input` for the cron `cron`; an `Err` is recorded as a failed tick,
    /// with the error's text as the detail.
    async fn fire(&self, cron: &str, target: &CronTarget, input: &str)
        -> Result<(), CronFireError>;
}

/// A [`CronHandler`] made from an async function of the cron's name, target and input.
pub fn cron_handler_fn<F, Fut>(f: F) -> Arc<dyn CronHandler>
where
    F: Fn(String, CronTarget, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CronFireError>> + Send + 'static,
{
    struct FnHandler<F>(F);

    #[async_trait]
    impl<F, Fut> CronHandler for FnHandler<F>
    where
        F: Fn(String, CronTarget, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CronFireError>> + Send + 'static,
    {
        async fn fire(
            &self,
            cron: &str,
            target: &CronTarget,
            input: &str,
        ) -> Result<(), CronFireError> {
            (self.0)(cron.to_owned(), target.clone(), input.to_owned()).await
        }
    }

    Arc::new(FnHandler(f))
}
