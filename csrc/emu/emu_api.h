// The emulator's host-side API without the CUDA-built-in macros of cuda_emu.h (safe to include
// next to torch headers).
#pragma once
#include <cuda_runtime_api.h>

namespace frcnn_emu {
enum Mode : int { kFibers = 0, kThreads = 1 };
void set_mode(Mode mode);  // process-wide; sanitizer builds always use kThreads
Mode mode();
cudaError_t get_last_error();      // returns and clears this host thread's last launch error
cudaError_t peek_last_error();
const char* last_error_message();  // of the last error recorded on this host thread
const char* error_string(cudaError_t err);
}  // namespace frcnn_emu
