// Progressive JPEGs decode at about a third of baseline speed, and most of that time is libjpeg's
// successive-approximation refinement scans: its decoder visits every coefficient position of
// every block for every refinement bit. This module takes those scans out of the stream that
// libjpeg sees and applies them to libjpeg's coefficient arrays itself, skipping zero runs with
// bit masks. The result is the same coefficients, so the same pixels.
//
// Anything unusual (corrupt or truncated data, a bogus progression, arithmetic coding, restart
// markers out of sequence) makes Build or Apply return false; the caller then decodes the original
// stream with libjpeg alone, which keeps its exact recovery behaviour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace progressive {

/** One component's coefficient blocks as libjpeg holds them: rows of 64-coefficient blocks, natural order. */
struct ComponentBlocks {
  int16_t* const* rows;  // rows[r] points at block 0 of block row r
  int rowCount;          // rows available (padded to the sampling factor)
  int blocksPerRow;      // blocks available per row (padded likewise)
};

struct HuffmanTable {
  uint8_t counts[17] = {0};  // counts[l]: codes of length l
  uint8_t symbols[256] = {0};
  int symbolCount = 0;
};

struct RefinementScan {
  int components[4] = {0};  // indices into the frame's components, in scan order
  int componentCount = 0;
  int ss = 0, se = 0, ah = 0, al = 0;
  int restartInterval = 0;  // MCUs between restart markers, 0 for none
  HuffmanTable ac;          // the AC table in force for this scan (AC refinements only)
  // Entropy-coded segments between restart markers, each as [begin, end) offsets into the file.
  std::vector<std::pair<size_t, size_t>> segments;
};

struct FrameComponent {
  int id = 0, h = 1, v = 1;
  int widthInBlocks = 0, heightInBlocks = 0;
};

class Plan {
 public:
  /**
   * Parses a JPEG; true only for an 8-bit Huffman progressive file with at least one refinement
   * scan and a consistent progression, ending in EOI.
   */
  bool Build(const uint8_t* data, size_t len);

  /** The file without its refinement scans: for libjpeg, in buffered-image mode. */
  const std::vector<uint8_t>& firstScans() const { return firstScans_; }
  const std::vector<FrameComponent>& components() const { return components_; }

  /** Applies every refinement scan, in file order; false when the data is not clean. */
  bool Apply(const ComponentBlocks* blocks, int count) const;

 private:
  const uint8_t* data_ = nullptr;
  int width_ = 0, height_ = 0, maxH_ = 1, maxV_ = 1;
  std::vector<FrameComponent> components_;
  std::vector<RefinementScan> refinements_;
  std::vector<uint8_t> firstScans_;
};

}  // namespace progressive
