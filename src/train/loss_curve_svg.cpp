#include "train/loss_curve_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace deepmoe {
namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

}  // namespace

std::string loss_curve_svg(const std::string& title, const std::vector<CurveSeries>& series) {
  const double W = 720, H = 440, left = 60, right = 20, top = 40, bottom = 50;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (!(x1 > x0)) x0 = 0, x1 = std::max(1.0, x1);
  if (!(y1 > y0)) y0 = 0, y1 = std::max(1.0, y1 + 1);
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double y) { return top + (y1 - y) / (y1 - y0) * (H - top - bottom); };
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W) + "\" height=\"" + fmt(H) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
                    "fill=\"white\"/>\n<text x=\"" + fmt(W / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" +
                    escape(title) + "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // ticks
    const double yv = y0 + (y1 - y0) * i / 5, xv = x0 + (x1 - x0) * i / 5;
    char ylab[32], xlab[32];
    std::snprintf(ylab, sizeof(ylab), "%.2f", yv);
    std::snprintf(xlab, sizeof(xlab), "%.0f", xv);
    svg += "<line x1=\"" + fmt(left) + "\" x2=\"" + fmt(W - right) + "\" y1=\"" + fmt(py(yv)) + "\" y2=\"" +
           fmt(py(yv)) + "\" stroke=\"#e5e5e5\"/>\n<text x=\"" + fmt(left - 6) + "\" y=\"" + fmt(py(yv) + 4) +
           "\" text-anchor=\"end\">" + ylab + "</text>\n<text x=\"" + fmt(px(xv)) + "\" y=\"" + fmt(H - bottom + 18) +
           "\" text-anchor=\"middle\">" + xlab + "</text>\n";
  }
  svg += "<rect x=\"" + fmt(left) + "\" y=\"" + fmt(top) + "\" width=\"" + fmt(W - left - right) + "\" height=\"" +
         fmt(H - top - bottom) + "\" fill=\"none\" stroke=\"black\"/>\n<text x=\"" + fmt(W / 2) + "\" y=\"" +
         fmt(H - 12) + "\" text-anchor=\"middle\">step</text>\n<text x=\"16\" y=\"" + fmt(H / 2) +
         "\" transform=\"rotate(-90 16 " + fmt(H / 2) + ")\" text-anchor=\"middle\">loss (nats/token)</text>\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    std::string pts;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(y)) pts += fmt(px(x)) + "," + fmt(py(y)) + " ";
    svg += "<polyline fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"1.5\"" +
           (s.dashed ? " stroke-dasharray=\"6 3\"" : "") + " points=\"" + pts + "\"/>\n";
    const double ly = top + 16 + 16 * double(i);
    svg += "<line x1=\"" + fmt(W - right - 190) + "\" x2=\"" + fmt(W - right - 165) + "\" y1=\"" + fmt(ly - 4) +
           "\" y2=\"" + fmt(ly - 4) + "\" stroke=\"" + s.color + "\" stroke-width=\"2\"" +
           (s.dashed ? " stroke-dasharray=\"6 3\"" : "") + "/>\n<text x=\"" + fmt(W - right - 160) + "\" y=\"" +
           fmt(ly) + "\">" + escape(s.label) + "</text>\n";
  }
  return svg + "</svg>\n";
}

}  // namespace deepmoe
