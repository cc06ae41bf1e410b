// The widget renderer (embed.js) typesets widget labels with MathJax 2's API, MathJax.Hub.Queue, while the
// book loads MathJax 3, which has no Hub: every page with a widget threw "Cannot read properties of undefined
// (reading 'Queue')". Give MathJax 3 a Hub.Queue that forwards to typesetPromise.
(function () {
  function queue(command) {
    var mathjax = window.MathJax;
    var element = Array.isArray(command) ? command[2] : undefined;
    if (mathjax && mathjax.startup && mathjax.startup.promise && mathjax.typesetPromise) {
      mathjax.startup.promise.then(function () {
        return mathjax.typesetPromise(element ? [element] : undefined);
      });
    }
  }
  function install() {
    if (window.MathJax && !window.MathJax.Hub) {
      window.MathJax.Hub = { Queue: queue };
    }
  }
  install(); // MathJax's configuration object, if the page defined one already
  // deferred scripts (MathJax 3 itself) have run by DOMContentLoaded; this listener is added before embed.js's
  document.addEventListener("DOMContentLoaded", install);
})();
