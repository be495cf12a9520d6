// Entry point (loaded by a fingerprinted URL). Every other module imports the
// others by their plain names, so each is instantiated exactly once.
import { boot } from "./app.js";

boot();
