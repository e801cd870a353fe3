//! Every bench binary runs on the gateway's allocator, so a stage costs here what it costs in
//! the gateway: on the system allocator malloc was a fifth of the log path's CPU, and model
//! inference page-faulted on every fresh tensor.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
