#include "npy.h"

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace {

std::runtime_error npy_error(const std::string& path, const std::string& why) {
  return std::runtime_error(path + ": " + why);
}

// The value of 'key' in the header dict, e.g. "'<f4'" or "(1, 3, 224, 224)".
std::string header_value(const std::string& header, const std::string& key, const std::string& path) {
  auto at = header.find("'" + key + "'");
  if (at == std::string::npos) throw npy_error(path, "the .npy header has no '" + key + "'");
  at = header.find(':', at) + 1;
  while (at < header.size() && header[at] == ' ') ++at;
  auto end = header[at] == '(' ? header.find(')', at) + 1 : header.find_first_of(",}", at);
  return header.substr(at, end - at);
}

}  // namespace

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw npy_error(path, "cannot open");
  char magic[8];
  if (!in.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY") throw npy_error(path, "not a .npy file");
  std::size_t header_size = 0;
  unsigned char size_bytes[4] = {0, 0, 0, 0};
  int width = magic[6] == 1 ? 2 : 4;
  if (!in.read(reinterpret_cast<char*>(size_bytes), width)) throw npy_error(path, "truncated header");
  for (int k = width - 1; k >= 0; --k) header_size = header_size * 256 + size_bytes[k];
  std::string header(header_size, ' ');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_size))) throw npy_error(path, "truncated header");
  if (header_value(header, "descr", path) != "'<f4'") throw npy_error(path, "must hold float32 values ('<f4')");
  if (header_value(header, "fortran_order", path) != "False") throw npy_error(path, "must be in C order");
  NpyArray array;
  std::string dims = header_value(header, "shape", path);
  std::stringstream parts(dims.substr(1, dims.size() - 2));
  for (std::string part; std::getline(parts, part, ',');) {
    if (part.find_first_not_of(' ') != std::string::npos) array.shape.push_back(std::stoul(part));
  }
  auto count = std::accumulate(array.shape.begin(), array.shape.end(), std::size_t{1}, std::multiplies<>());
  array.data.resize(count);
  if (!in.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(count * sizeof(float)))) {
    throw npy_error(path, "holds fewer values than its shape says");
  }
  return array;
}

void write_npy(const std::string& path, const std::vector<std::size_t>& shape, const float* data) {
  std::string dims;
  for (auto d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // (14, 14); a 1-d shape keeps its comma: (5,)
  else if (!dims.empty()) dims.resize(dims.size() - 1);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');  // total header a multiple of 64 bytes
  header += '\n';
  std::ofstream out(path + ".tmp", std::ios::binary);
  auto size = static_cast<std::uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(size & 0xff)).put(static_cast<char>(size >> 8));
  out << header;
  auto count = std::accumulate(shape.begin(), shape.end(), std::size_t{1}, std::multiplies<>());
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  out.close();
  if (!out || std::rename((path + ".tmp").c_str(), path.c_str()) != 0) throw npy_error(path, "cannot write");
}
