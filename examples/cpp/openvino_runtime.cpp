// The fused graph in OpenVINO's runtime, which reads ONNX directly.
#include <openvino/openvino.hpp>

#include "runtime.h"

const char* const RUNTIME_NAME = "OpenVINO";

FusedOutputs run_fused(const std::string& path, const NpyArray& input) {
  ov::Core core;
  auto model = core.read_model(path);
  // f32 throughout: the CPU plugin would otherwise compute in bf16 where the processor has it
  auto compiled = core.compile_model(model, "CPU", ov::hint::inference_precision(ov::element::f32));
  auto request = compiled.create_infer_request();
  ov::Shape shape(input.shape.begin(), input.shape.end());
  auto data = const_cast<float*>(input.data.data());  // OpenVINO only reads it
  request.set_input_tensor(ov::Tensor(ov::element::f32, shape, data));
  request.infer();
  ov::Tensor logits = request.get_tensor("logits"), saliency = request.get_tensor("saliency");
  FusedOutputs out;
  auto map_shape = saliency.get_shape();  // [1, C, h, w]
  out.classes = map_shape[1], out.h = map_shape[2], out.w = map_shape[3];
  out.logits.assign(logits.data<float>(), logits.data<float>() + out.classes);
  out.saliency.assign(saliency.data<float>(), saliency.data<float>() + saliency.get_size());
  // OpenVINO keeps an ONNX file's metadata under rt_info "framework"
  if (model->has_rt_info("framework", "reciprocam.split")) {
    out.metadata = model->get_rt_info<std::string>("framework", "reciprocam.split");
  }
  return out;
}
