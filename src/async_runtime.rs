//! The one tokio runtime configuration lfeval uses, for runs and for `model test`. Two worker
//! threads are plenty: model calls wait on the network or on Python threads, never on tokio.

pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
