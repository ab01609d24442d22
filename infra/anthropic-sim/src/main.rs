//! `anthropic-sim [--addr 127.0.0.1:4010] [--demo]`: serves the simulator until Ctrl-C.

use std::net::SocketAddr;

use anthropic_sim::{demo, Sim, SimServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut addr: SocketAddr = "127.0.0.1:4010".parse()?;
    let mut seed = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs a value")?.parse()?,
            "--demo" => seed = true,
            "-h" | "--help" => {
                println!("anthropic-sim [--addr 127.0.0.1:4010] [--demo]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let sim = Sim::new();
    if seed {
        demo::seed(&sim);
    }
    let server = SimServer::start(addr, sim).await?;
    println!(
        "Anthropic simulator on {} (controls under /_sim)",
        server.base_url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
