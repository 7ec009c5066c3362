// The fused graph in ONNX Runtime, through its C++ API.
#include <onnxruntime_cxx_api.h>

#include <array>
#include <stdexcept>

#include "runtime.h"

const char* const RUNTIME_NAME = "ONNX Runtime";

FusedOutputs run_fused(const std::string& path, const NpyArray& input) {
  try {
    Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "reciprocam_explain");
    Ort::SessionOptions options;
    Ort::Session session(env, path.c_str(), options);
    Ort::AllocatorWithDefaultOptions allocator;
    auto input_name = session.GetInputNameAllocated(0, allocator);
    std::vector<int64_t> shape(input.shape.begin(), input.shape.end());
    auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    auto tensor = Ort::Value::CreateTensor<float>(memory, const_cast<float*>(input.data.data()), input.data.size(),
                                                  shape.data(), shape.size());
    std::array<const char*, 1> inputs = {input_name.get()};
    std::array<const char*, 2> outputs = {"logits", "saliency"};
    auto results = session.Run(Ort::RunOptions{nullptr}, inputs.data(), &tensor, 1, outputs.data(), outputs.size());
    FusedOutputs out;
    auto map_shape = results[1].GetTensorTypeAndShapeInfo().GetShape();  // [1, C, h, w]
    out.classes = map_shape[1], out.h = map_shape[2], out.w = map_shape[3];
    const float* logits = results[0].GetTensorData<float>();
    const float* saliency = results[1].GetTensorData<float>();
    out.logits.assign(logits, logits + out.classes);
    out.saliency.assign(saliency, saliency + out.classes * out.h * out.w);
    auto metadata = session.GetModelMetadata();
    auto value = metadata.LookupCustomMetadataMapAllocated("reciprocam.split", allocator);
    if (value) out.metadata = value.get();
    return out;
  } catch (const Ort::Exception& error) {
    throw std::runtime_error(error.what());
  }
}
