// Loaded on widget pages between require.js and the ipywidgets embed bundle (see _config.yml).
(function () {
  // 1. Icon fonts. The bundle looks for its fonts next to the URL that require.js gives its AMD
  // module "@jupyter-widgets/html-manager/dist/libembed-amd". By default that URL is relative to
  // the page (book/@jupyter-widgets/html-manager/dist/...), where nothing is served. Map the
  // module's folder to the served copy of the bundle, _static/widgets/ next to this file.
  var widgets = new URL("widgets", document.currentScript.src).href;
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": widgets } });

  // 2. Math in widget labels. ipywidgets typesets through the MathJax 2 API,
  // MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the book loads MathJax 3, which has no
  // Hub. MathJax is a deferred script, so it has run by "load", when the bundle renders the widgets
  // (this listener is registered first, so it runs first). Translate those calls to MathJax 3.
  window.addEventListener("load", function () {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || !mathjax.startup) return;
    mathjax.Hub = {
      Queue: function (job) {
        var element = job[2];
        mathjax.startup.promise
          .then(function () { return mathjax.typesetPromise([element]); })
          .catch(function (err) { console.error("MathJax could not typeset a widget label:", err); });
      },
    };
  });
})();
