// A loss-curve plot as a standalone SVG file (no plotting dependency): training loss and validation loss against
// the step, for one run or several overlaid (FP8 vs BF16).
#pragma once

#include <string>
#include <vector>

namespace deepmoe {

struct CurveSeries {
  std::string label;
  std::string color;  // CSS color
  bool dashed = false;
  std::vector<std::pair<double, double>> points;  // (step, loss)
};

// The SVG text: axes with ticks, one polyline per series, a legend.
std::string loss_curve_svg(const std::string& title, const std::vector<CurveSeries>& series);

}  // namespace deepmoe
