//! Writes a second quantization of a GGUF model with llama.cpp's own quantizer (the code
//! behind its `llama-quantize` tool), for tests that need two different model files: the
//! routing-by-model tests serve the default model and its Q8_0 requantization side by side.
//!
//! Usage: `requantize INPUT.gguf OUTPUT.gguf` (writes OUTPUT atomically; Q8_0, requantizing
//! allowed, since the input is already quantized).

use std::ffi::CString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: requantize INPUT.gguf OUTPUT.gguf");
        return ExitCode::from(2);
    };
    let partial = format!("{output}.partial");
    let (Ok(input_c), Ok(partial_c)) =
        (CString::new(input.as_str()), CString::new(partial.as_str()))
    else {
        eprintln!("requantize: paths must not contain NUL bytes");
        return ExitCode::from(2);
    };
    // SAFETY: plain llama.cpp C calls: the default parameters are a value, and the two paths
    // are NUL-terminated strings that outlive the call.
    let status = unsafe {
        llama_cpp_sys_2::llama_backend_init();
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0;
        params.allow_requantize = true;
        llama_cpp_sys_2::llama_model_quantize(input_c.as_ptr(), partial_c.as_ptr(), &params)
    };
    if status != 0 {
        eprintln!("requantize: llama.cpp failed ({status})");
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::rename(&partial, output) {
        eprintln!("requantize: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
