#include "overlay.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

namespace {

std::uint8_t to_byte(double value) { return static_cast<std::uint8_t>(std::lround(std::clamp(value, 0.0, 255.0))); }

// OpenCV's INTER_CUBIC weights (a = -0.75) for the 4 taps around a fractional position t in [0, 1).
std::array<double, 4> cubic_weights(double t) {
  const double a = -0.75;
  auto near = [&](double x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };
  auto far = [&](double x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };
  return {far(1 + t), near(t), near(1 - t), far(2 - t)};
}

// The map upsampled to height x width (half-pixel centres, replicated border), clipped to [0, 1].
std::vector<double> upsample(const float* map, std::size_t h, std::size_t w, std::size_t height,
                             std::size_t width) {
  auto at = [&](long y, long x) {
    y = std::clamp<long>(y, 0, static_cast<long>(h) - 1), x = std::clamp<long>(x, 0, static_cast<long>(w) - 1);
    return static_cast<double>(map[y * w + x]);
  };
  std::vector<double> out(height * width);
  for (std::size_t Y = 0; Y < height; ++Y) {
    double sy = (Y + 0.5) * h / height - 0.5, y0 = std::floor(sy);
    auto wy = cubic_weights(sy - y0);
    for (std::size_t X = 0; X < width; ++X) {
      double sx = (X + 0.5) * w / width - 0.5, x0 = std::floor(sx);
      auto wx = cubic_weights(sx - x0);
      double sum = 0;
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) sum += wy[i] * wx[j] * at(static_cast<long>(y0) - 1 + i, static_cast<long>(x0) - 1 + j);
      }
      out[Y * width + X] = std::clamp(sum, 0.0, 1.0);
    }
  }
  return out;
}

// OpenCV's COLORMAP_JET as RGB for a level 0..255 (within one level of OpenCV's table).
std::array<std::uint8_t, 3> jet(long level) {
  double x = level / 255.0;
  auto channel = [&](double c) { return to_byte(255 * std::clamp(std::min(4 * x - c + 1.5, c + 1.5 - 4 * x), 0.0, 1.0)); };
  return {channel(3), channel(2), channel(1)};
}

std::uint32_t crc32(const std::uint8_t* data, std::size_t size, std::uint32_t crc = 0) {
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put32(std::vector<std::uint8_t>& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

void chunk(std::vector<std::uint8_t>& png, const char* type, const std::vector<std::uint8_t>& data) {
  put32(png, static_cast<std::uint32_t>(data.size()));
  std::vector<std::uint8_t> body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  png.insert(png.end(), body.begin(), body.end());
  put32(png, crc32(body.data(), body.size()));
}

// A zlib stream of `raw` in stored (uncompressed) deflate blocks.
std::vector<std::uint8_t> zlib_stored(const std::vector<std::uint8_t>& raw) {
  std::vector<std::uint8_t> out = {0x78, 0x01};
  std::uint32_t a = 1, b = 0;  // Adler-32
  for (std::size_t at = 0; at == 0 || at < raw.size();) {
    std::size_t size = std::min<std::size_t>(65535, raw.size() - at);
    bool last = at + size == raw.size();
    out.push_back(last ? 1 : 0);
    out.push_back(size & 0xFF), out.push_back(size >> 8);
    out.push_back(~size & 0xFF), out.push_back((~size >> 8) & 0xFF);
    for (std::size_t i = at; i < at + size; ++i) {
      out.push_back(raw[i]);
      a = (a + raw[i]) % 65521, b = (b + a) % 65521;
    }
    at += size;
    if (last) break;
  }
  put32(out, (b << 16) | a);
  return out;
}

}  // namespace

std::vector<std::uint8_t> picture(const float* input, std::size_t height, std::size_t width,
                                  const std::array<double, 3>& mean, const std::array<double, 3>& std) {
  std::vector<std::uint8_t> rgb(height * width * 3);
  for (std::size_t c = 0; c < 3; ++c) {
    for (std::size_t i = 0; i < height * width; ++i) {
      rgb[3 * i + c] = to_byte(255 * (input[c * height * width + i] * std[c] + mean[c]));
    }
  }
  return rgb;
}

void blend(std::vector<std::uint8_t>& rgb, std::size_t height, std::size_t width, const float* map,
           std::size_t h, std::size_t w, double alpha) {
  auto heat = upsample(map, h, w, height, width);
  for (std::size_t i = 0; i < height * width; ++i) {
    auto colour = jet(std::lround(heat[i] * 255));
    for (int c = 0; c < 3; ++c) rgb[3 * i + c] = to_byte(alpha * colour[c] + (1 - alpha) * rgb[3 * i + c]);
  }
}

void write_png(const std::string& path, const std::vector<std::uint8_t>& rgb, std::size_t height,
               std::size_t width) {
  std::vector<std::uint8_t> header, raw;
  put32(header, static_cast<std::uint32_t>(width)), put32(header, static_cast<std::uint32_t>(height));
  header.insert(header.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, no interlace
  for (std::size_t y = 0; y < height; ++y) {
    raw.push_back(0);  // no filter
    raw.insert(raw.end(), rgb.begin() + y * width * 3, rgb.begin() + (y + 1) * width * 3);
  }
  std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  chunk(png, "IHDR", header);
  chunk(png, "IDAT", zlib_stored(raw));
  chunk(png, "IEND", {});
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(png.data()), static_cast<std::streamsize>(png.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}
