/**
 * As log-env.ts, plus `POWERTOOLS_LOGGER_LOG_EVENT=true`: an operator switch that makes Powertools
 * log every incoming Lambda event. Used by logs-event.test.ts to see what that switch would expose.
 */
import './log-env.js';

process.env.POWERTOOLS_LOGGER_LOG_EVENT = 'true';
