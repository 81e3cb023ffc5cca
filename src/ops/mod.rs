//! The operation layer: every write imgchain makes goes through one shape
//! (ARCHITECTURE.md §3) — a request is planned against a scanned forest by the guards
//! ([`guards`]), the plan runs as a job ([`job`]) that opens every image again, re-checks what
//! may have changed since the plan, writes through a read-write window ([`window`]) and the
//! crash-ordering storage layer, and ends in an outcome that reports each step apart.
//!
//! The UI and the CLI discover the images around a request with [`scope::discover`] and plan
//! it with the operation's [`Operation::plan`]: they cannot reach different decisions.

pub mod any;
pub mod commit;
pub mod datapath;
pub mod delete;
pub mod dependents;
pub mod describe;
pub mod extents;
pub mod guards;
pub mod job;
pub mod kind;
pub mod live;
pub mod merge;
pub mod operation;
pub mod plan_image;
pub mod progress;
pub mod rebase;
pub mod refusal;
pub mod repair;
pub mod scope;
pub mod settings;
pub mod snapshot;
pub mod space;
pub mod trust;
pub mod window;

pub use describe::{Description, Said};
pub use job::{Event, Job, JobId, spawn};
pub use kind::OpKind;
pub use operation::{Operation, Report};
pub use plan_image::PlanImage;
pub use progress::{Phase, Progress, Run};
pub use refusal::Refusal;
