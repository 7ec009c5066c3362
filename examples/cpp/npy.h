// Reading and writing float32 .npy files (NumPy's format, version 1-3, C order), nothing more.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

struct NpyArray {
  std::vector<std::size_t> shape;
  std::vector<float> data;
};

// Throws std::runtime_error naming the file and what is wrong with it.
NpyArray read_npy(const std::string& path);
void write_npy(const std::string& path, const std::vector<std::size_t>& shape, const float* data);
