//! What the portal reads back: the stored telemetry events (`telemetry.rs`) and the enterprise surface's
//! daily usage (`usage.rs`), each a paginated `GET` over the telemetry table.

mod telemetry;
pub mod usage;
