// reciprocam_explain: run a reciprocam fused graph and write one saliency map. Built against OpenVINO
// (reciprocam_explain) or ONNX Runtime (reciprocam_explain_ort); runtime.h is the difference.
//
//   reciprocam_explain FUSED.onnx INPUT.npy OUTPUT.map.npy [--target CLASS] [--labels labels.txt]
//                      [--overlay OUTPUT.png]
//
// INPUT.npy is the model's input for one image, float32 [1, 3, H, W] or [3, H, W], as
// `reciprocam preprocess` writes it. Prints the top-5 classes (softmax; names from the graph, or
// --labels) and the target, and writes the target's map, float32 [h, w] in [0, 1]: the map
// `reciprocam explain` writes. --overlay also writes the map over the image as a PNG, as
// `reciprocam explain` does.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"
#include "overlay.h"
#include "runtime.h"

namespace {

struct Arguments {
  std::string model, input, output, labels, overlay;
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
    } else if (arg == "--overlay" && k + 1 < argc) {
      args.overlay = argv[++k];
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 3) {
    throw std::invalid_argument(
        "usage: reciprocam_explain FUSED.onnx INPUT.npy OUTPUT.map.npy [--target CLASS] [--labels labels.txt] "
        "[--overlay OUTPUT.png]");
  }
  args.model = positional[0], args.input = positional[1], args.output = positional[2];
  return args;
}

// Where the JSON array of `key` starts ('['), or npos when the key is missing or null.
std::size_t array_of(const std::string& json, const std::string& key) {
  const std::string quoted = "\"" + key + "\"";
  auto at = json.find(quoted);
  if (at == std::string::npos || (at = json.find_first_of("[n", at + quoted.size())) == std::string::npos ||
      json[at] == 'n') {
    return std::string::npos;
  }
  return at;
}

// The class names the graph carries: "labels": ["circle", ...]. Empty when it has none.
std::vector<std::string> graph_labels(const std::string& json) {
  std::vector<std::string> names;
  auto at = array_of(json, "labels");
  if (at == std::string::npos) return names;
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

// The graph's per-channel "mean" or "std" (3 values, or 1 for all channels), else `fallback`
// (ImageNet's, as `reciprocam preprocess` uses for a model without them).
std::array<double, 3> channel_values(const std::string& json, const std::string& key, std::array<double, 3> fallback) {
  auto at = array_of(json, key);
  if (at == std::string::npos) return fallback;
  std::vector<double> values;
  for (const char* p = json.c_str() + at + 1; *p && *p != ']';) {
    char* end = nullptr;
    double value = std::strtod(p, &end);
    if (end == p) {
      ++p;
    } else {
      values.push_back(value), p = end;
    }
  }
  if (values.size() == 1) return {values[0], values[0], values[0]};
  if (values.size() != 3) throw std::runtime_error("the graph's " + key + " has " + std::to_string(values.size()) + " values");
  return {values[0], values[1], values[2]};
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
  FusedOutputs out = run_fused(args.model, input);
  std::vector<double> scores = softmax(out.logits.data(), out.classes);
  std::vector<std::size_t> order(out.classes);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return scores[a] > scores[b]; });
  auto names = class_names(args.labels, graph_labels(out.metadata), out.classes);
  long target = args.target < 0 ? static_cast<long>(order[0]) : args.target;
  if (target >= static_cast<long>(out.classes)) {
    throw std::runtime_error("--target must lie in 0.." + std::to_string(out.classes - 1));
  }
  std::cout << "top-5:";
  for (std::size_t k = 0; k < std::min<std::size_t>(5, out.classes); ++k) {
    std::printf("%s %s %.3f", k ? "," : "", names[order[k]].c_str(), scores[order[k]]);
  }
  std::cout << "\ntarget: " << names[target] << "\n";
  const float* map = out.saliency.data() + target * out.h * out.w;
  write_npy(args.output, {out.h, out.w}, map);
  std::cout << "wrote " << args.output << " (" << out.h << "x" << out.w << ", " << RUNTIME_NAME << ")\n";
  if (!args.overlay.empty()) {
    if (input.shape[1] != 3) throw std::runtime_error("--overlay needs an NCHW input [1, 3, H, W]");
    auto mean = channel_values(out.metadata, "mean", {0.485, 0.456, 0.406});
    auto std = channel_values(out.metadata, "std", {0.229, 0.224, 0.225});
    std::size_t height = input.shape[2], width = input.shape[3];
    auto rgb = picture(input.data.data(), height, width, mean, std);
    blend(rgb, height, width, map, out.h, out.w);
    write_png(args.overlay, rgb, height, width);
    std::cout << "wrote " << args.overlay << "\n";
  }
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
