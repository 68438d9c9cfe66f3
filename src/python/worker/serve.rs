//! The worker side: `lfeval __worker` takes its stdin/stdout as the protocol channel, brings
//! the interpreter up, loads the one snippet it is sent, and answers calls one at a time until
//! lfeval closes the channel.

use std::io::BufReader;
use std::sync::Arc;

use super::frame;
use super::{Loaded, Reply, Request};
use crate::python::{HttpBackend, Isolation, PythonOptions, initialize};

/// Requests are small (a body, an environment, a sample); this only guards against nonsense.
const MAX_REQUEST: u64 = 1024 * 1024 * 1024;

/// Makes the `lfeval.http` backend of a worker's snippet from its `max_response_bytes`.
pub type HttpFactory<'a> = &'a dyn Fn(u64) -> Arc<dyn HttpBackend>;

/// Serves lfeval until it closes the channel. Must run before any other thread starts (it
/// initialises the interpreter).
pub fn serve(options: &PythonOptions, http: HttpFactory<'_>) -> anyhow::Result<()> {
    let (input, mut output) = crate::stdio::worker_protocol()?;
    let mut input = BufReader::new(input);
    let runtime = match initialize(options) {
        Ok(runtime) => runtime,
        Err(e) => {
            frame::write(&mut output, &Reply::Fatal(e.to_string()))?;
            return Ok(());
        }
    };
    let Some(Request::Load(mut spec)) = frame::read::<Request>(&mut input, MAX_REQUEST)? else {
        frame::write(&mut output, &Reply::Fatal("expected a snippet to load".to_owned()))?;
        return Ok(());
    };
    spec.isolation = Isolation::InProcess;
    spec.workers = 1;
    let backend = http(spec.max_return_bytes.unwrap_or(u64::MAX));
    let snippet = match runtime.load_snippet(spec) {
        Ok(snippet) => snippet,
        Err(e) => {
            frame::write(&mut output, &Reply::LoadFailed(e))?;
            runtime.flush();
            return Ok(());
        }
    };
    snippet.set_http_backend(backend);
    frame::write(
        &mut output,
        &Reply::Loaded(Loaded {
            module_name: snippet.module_name().to_owned(),
            is_async: snippet.is_async(),
            arity: snippet.arity(),
            load_output: snippet.load_output().to_owned(),
        }),
    )?;
    let tokio = crate::async_runtime::build()?;
    while let Some(request) = frame::read::<Request>(&mut input, MAX_REQUEST)? {
        let reply = match request {
            Request::Call { args, timeout } => Reply::Done(tokio.block_on(runtime.call(&snippet, args, timeout))),
            Request::Load(_) => Reply::Fatal("a worker loads one snippet only".to_owned()),
        };
        frame::write(&mut output, &reply)?;
    }
    runtime.flush();
    tokio.shutdown_background();
    Ok(())
}
