// The picture `reciprocam explain` writes beside a map (io/overlay.py): the map upsampled bicubically
// (OpenCV's INTER_CUBIC), coloured with OpenCV's JET colour map and blended 50/50 over the image.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

// The RGB uint8 picture [H, W, 3] behind a model input, float32 [3, H, W] normalised as
// (x / 255 - mean) / std.
std::vector<std::uint8_t> picture(const float* input, std::size_t height, std::size_t width,
                                  const std::array<double, 3>& mean, const std::array<double, 3>& std);

// `rgb` [H, W, 3] with the [h, w] map in [0, 1] blended over it: alpha * JET(map) + (1 - alpha) * rgb.
void blend(std::vector<std::uint8_t>& rgb, std::size_t height, std::size_t width, const float* map,
           std::size_t h, std::size_t w, double alpha = 0.5);

// Writes RGB uint8 [H, W, 3] as a PNG file (uncompressed deflate: no zlib needed). Throws
// std::runtime_error naming the file if it cannot be written.
void write_png(const std::string& path, const std::vector<std::uint8_t>& rgb, std::size_t height,
               std::size_t width);
