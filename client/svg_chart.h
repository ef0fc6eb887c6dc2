// Small charts as inline SVG for the `mixq report` page: an x/y chart (lines
// and points) and a horizontal bar chart, each with axes, ticks, axis labels
// and a legend. Self-contained (no scripts, fonts or links) and gRPC-free;
// every text is HTML-escaped. Pure functions, thread-safe.
//
// Every chart is one <svg id="..." class="chart"> element; the data marks
// in it carry class "mark" (a <polyline> per line, a <circle> per point, a
// <rect> per bar), each with a <title> tooltip where the caller gave one.
#ifndef MIXQ_CLIENT_SVG_CHART_H_
#define MIXQ_CLIENT_SVG_CHART_H_

#include <optional>
#include <string>
#include <vector>

namespace mixq::client {

struct ChartPoint {
  double x = 0;
  double y = 0;
  std::string tooltip;  // optional; shown on hover
};

struct ChartSeries {
  enum class Style {
    kLine,           // a polyline through the points, in order
    kPoints,         // a circle per point
    kLineAndPoints,  // both
  };
  std::string name;   // the legend's entry
  std::string color;  // a CSS colour, e.g. "#1f77b4"
  Style style = Style::kLineAndPoints;
  // Points whose x or y is not finite are left out (a line breaks there).
  std::vector<ChartPoint> points;
};

struct ChartAxis {
  std::string label;
  // Ticks at whole numbers only (steps, bits).
  bool integer_ticks = false;
  // The range shown, else the data's (widened to round tick values).
  std::optional<double> min;
  std::optional<double> max;
};

struct XyChart {
  std::string id;  // the <svg>'s id (the caller keeps it unique)
  std::string title;
  ChartAxis x;
  ChartAxis y;
  std::vector<ChartSeries> series;
  int width = 720;  // pixels, the legend included
  int height = 320;
};

// Whether `chart` has a point to draw (one with finite x and y).
bool HasData(const XyChart& chart);

// The chart as an <svg> element. A chart without data (HasData false) is
// drawn with its axes and the text "no data".
std::string RenderXyChart(const XyChart& chart);

struct Bar {
  std::string label;  // the row's name (shortened if long; full in tooltip)
  double value = 0;
  std::string color;    // a CSS colour
  std::string tooltip;  // optional; appended to the label in the tooltip
};

// One horizontal bar per row, labels on the left, values along the x axis
// from 0; the height grows with the number of bars.
struct BarChart {
  std::string id;
  std::string title;
  std::string value_label;  // the x axis's label
  bool integer_ticks = false;
  std::optional<double> max;  // else the largest value (rounded up)
  std::vector<Bar> bars;
  int width = 720;
};

std::string RenderBarChart(const BarChart& chart);

// About `max_count` (>= 2) round tick values ("nice numbers": 1, 2 or 5
// times a power of ten) covering [lo, hi], ascending; the first is <= lo
// and the last >= hi. With integer_only, steps are whole numbers. lo == hi
// is widened around the value.
std::vector<double> NiceTicks(double lo, double hi, int max_count,
                              bool integer_only = false);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_SVG_CHART_H_
