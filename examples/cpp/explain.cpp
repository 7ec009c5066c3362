// reciprocam_explain: run a reciprocam fused graph with OpenVINO and write one saliency map.
//
//   reciprocam_explain FUSED.onnx INPUT.npy OUTPUT.map.npy [--target CLASS] [--labels labels.txt]
//
// INPUT.npy is the model's input for one image, float32 [1, 3, H, W] or [3, H, W], as
// `reciprocam preprocess` writes it. Prints the top-5 classes (softmax; names from the graph, or
// --labels) and the target, and writes the target's map, float32 [h, w] in [0, 1]: the map
// `reciprocam explain` writes.

#include <openvino/openvino.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <iostream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"

namespace {

struct Arguments {
  std::string model, input, output, labels;
  long target = -1;  // -1: the top class
};

Arguments parse(int argc, char** argv) {
  Arguments args;
  std::vector<std::string> positional;
  for (int k = 1; k < argc; ++k) {
    std::string arg = argv[k];
    if (arg == "--target" && k + 1 < argc) {
      std::string value = argv[++k];
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) {
        throw std::invalid_argument("--target must be a class index, not '" + value + "'");
      }
      args.target = std::stol(value);
    } else if (arg == "--labels" && k + 1 < argc) {
      args.labels = argv[++k];
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 3) {
    throw std::invalid_argument(
        "usage: reciprocam_explain FUSED.onnx INPUT.npy OUTPUT.map.npy [--target CLASS] [--labels labels.txt]");
  }
  args.model = positional[0], args.input = positional[1], args.output = positional[2];
  return args;
}

// The class names the fused graph carries: "labels": ["circle", ...] in its reciprocam.split metadata
// (OpenVINO keeps an ONNX file's metadata under rt_info "framework"). Empty when it has none.
std::vector<std::string> graph_labels(const std::shared_ptr<ov::Model>& model) {
  std::vector<std::string> names;
  if (!model->has_rt_info("framework", "reciprocam.split")) return names;
  auto json = model->get_rt_info<std::string>("framework", "reciprocam.split");
  auto at = json.find("\"labels\"");
  if (at == std::string::npos || (at = json.find_first_of("[n", at)) == std::string::npos || json[at] == 'n') {
    return names;  // no key, or "labels": null
  }
  std::string name;
  bool inside = false;
  for (++at; at < json.size() && (inside || json[at] != ']'); ++at) {
    char c = json[at];
    if (inside && c == '\\') {
      name += json[++at];  // \" and \\; other escapes are rare in class names
    } else if (c == '"') {
      if (inside) names.push_back(name), name.clear();
      inside = !inside;
    } else if (inside) {
      name += c;
    }
  }
  return names;
}

std::vector<std::string> class_names(const std::string& path, std::vector<std::string> names, std::size_t classes) {
  if (!path.empty()) {
    names.clear();
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open labels file " + path);
    for (std::string line; std::getline(in, line);) names.push_back(line);
  }
  for (auto k = names.size(); k < classes; ++k) names.push_back(std::to_string(k));
  return names;
}

std::vector<double> softmax(const float* logits, std::size_t classes) {
  std::vector<double> scores(logits, logits + classes);
  double top = *std::max_element(scores.begin(), scores.end()), sum = 0;
  for (auto& s : scores) sum += (s = std::exp(s - top));
  for (auto& s : scores) s /= sum;
  return scores;
}

int run(const Arguments& args) {
  NpyArray input = read_npy(args.input);
  if (input.shape.size() == 3) input.shape.insert(input.shape.begin(), 1);
  if (input.shape.size() != 4 || input.shape[0] != 1) {
    throw std::runtime_error(args.input + ": expected one image, float32 [1, 3, H, W] or [3, H, W]");
  }
  ov::Core core;
  auto model = core.read_model(args.model);
  // f32 throughout: the CPU plugin would otherwise compute in bf16 where the processor has it
  auto compiled = core.compile_model(model, "CPU", ov::hint::inference_precision(ov::element::f32));
  auto request = compiled.create_infer_request();
  ov::Shape shape(input.shape.begin(), input.shape.end());
  request.set_input_tensor(ov::Tensor(ov::element::f32, shape, input.data.data()));
  request.infer();
  ov::Tensor logits = request.get_tensor("logits"), saliency = request.get_tensor("saliency");
  auto classes = logits.get_shape()[1];
  auto map_shape = saliency.get_shape();  // [1, C, h, w]
  std::vector<double> scores = softmax(logits.data<float>(), classes);
  std::vector<std::size_t> order(classes);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return scores[a] > scores[b]; });
  auto names = class_names(args.labels, graph_labels(model), classes);
  long target = args.target < 0 ? static_cast<long>(order[0]) : args.target;
  if (target >= static_cast<long>(classes)) {
    throw std::runtime_error("--target must lie in 0.." + std::to_string(classes - 1));
  }
  std::cout << "top-5:";
  for (std::size_t k = 0; k < std::min<std::size_t>(5, classes); ++k) {
    std::printf("%s %s %.3f", k ? "," : "", names[order[k]].c_str(), scores[order[k]]);
  }
  std::cout << "\ntarget: " << names[target] << "\n";
  std::size_t cells = map_shape[2] * map_shape[3];
  write_npy(args.output, {map_shape[2], map_shape[3]}, saliency.data<float>() + target * cells);
  std::cout << "wrote " << args.output << " (" << map_shape[2] << "x" << map_shape[3] << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::invalid_argument& error) {
    std::cerr << error.what() << "\n";
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
}
