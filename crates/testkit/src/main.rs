//! `emulator [--port N] [--chunks N] [--key K] [--threads N] [--record true|false]`: the provider
//! emulators as a standalone server, for the end-to-end suite and the benchmark (which turns
//! recording off so that a long run neither grows nor spends time on the request log).

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut port = 0u16;
    let mut config = testkit::EmulatorConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--port" => port = v.parse()?,
            "--chunks" => config.stream_chunks = v.parse()?,
            "--key" => config.api_key = v,
            "--threads" => config.threads = v.parse()?,
            "--record" => config.record = v.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let threads = config.threads.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let em = testkit::Emulator::start_on(port, config).await?;
        println!("emulator listening on {}", em.addr);
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
