// The traces the dashboard draws (study.js, trial.js); plotly.js core brings scatter.
var Plotly = require('plotly.js/lib/core');
Plotly.register([
  require('plotly.js/lib/scattergl'),
  require('plotly.js/lib/bar'),
  require('plotly.js/lib/box'),
  require('plotly.js/lib/parcoords'),
]);
module.exports = Plotly;
