// The ipywidgets HTML embedder typesets widget labels through MathJax 2's API (MathJax.Hub.Queue),
// but the book loads MathJax 3, whose API is MathJax.typesetPromise. Route the old calls to the new one.
// This script runs before the embedder, so its listener runs first.
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub) {
    return;
  }
  mj.Hub = {
    Queue: function (job) {
      var element = Array.isArray(job) ? job[2] : undefined;
      if (mj.startup && mj.startup.promise && mj.typesetPromise) {
        mj.startup.promise
          .then(function () {
            return mj.typesetPromise(element ? [element] : undefined);
          })
          .catch(function (err) {
            console.warn("typesetting a widget label failed:", err);
          });
      }
    },
  };
});
