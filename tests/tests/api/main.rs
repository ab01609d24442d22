//! Every integration test, in one binary (one link of the AWS SDK and `lambda_http` instead of one per
//! file, and every test free to run beside any other). One module per area:
//!
//! - `connection`, `anthropic_client`: connect, test, rotate, disconnect; the Anthropic client on the
//!   wire.
//! - `publish`, `etag`, `store_limits`, `crash_sweep`: the catalog and its publication, conditional writes,
//!   the real services' limits, crashes anywhere.
//! - `poller`, `enterprise_poll`: the audit log and the Compliance feed into telemetry.
//! - `enterprise`: the enterprise surface end to end.
//! - `authorization_matrix`, `isolation`, `api_properties`, `openapi`: tenant isolation, generated
//!   requests, the contract.
//! - `events`, `template`: every sample event through its handler; `template.yaml`'s shape.
//! - `simulator`, `simulator_enterprise`: the simulators against their contracts, over raw HTTP.
//! - `transpile_props`: the transpiler's properties.
//!
//! `tests/key_hygiene.rs` is the one other binary: it installs the process's log subscriber, as a
//! function does, to capture every line.
//!
//! Each test has its own stage (table prefix) in one shared moto and its own simulator, so tests stay
//! isolated while they share the process.

mod anthropic_client;
mod api_properties;
mod authorization_matrix;
mod connection;
mod crash_sweep;
mod enterprise;
mod enterprise_poll;
mod etag;
mod events;
mod isolation;
mod openapi;
mod poller;
mod publish;
mod simulator;
mod simulator_enterprise;
mod store_limits;
mod template;
mod transpile_props;
