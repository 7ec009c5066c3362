// One run of a fused graph on one image, by the runtime the program was built against
// (openvino_runtime.cpp or onnxruntime_runtime.cpp).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "npy.h"

struct FusedOutputs {
  std::vector<float> logits;                // [C]
  std::vector<float> saliency;              // [C, h, w]
  std::size_t classes = 0, h = 0, w = 0;
  std::string metadata;                     // the graph's reciprocam.split metadata (JSON), "" if none
};

extern const char* const RUNTIME_NAME;

// Runs the fused graph at `model` on `input` ([1, 3, H, W] float32) in float32. Throws
// std::runtime_error saying what failed.
FusedOutputs run_fused(const std::string& model, const NpyArray& input);
